"""testinfra checks shipped with provisioner; `provisioner cluster validate` runs them."""
