// The pause program of the pod sandbox image: ours, no dependencies.
module provisioner.local/mirror/pause

go 1.26.0
