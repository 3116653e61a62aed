# Loads the Vagrantfile with a stand-in Vagrant that records each machine it defines
# (name, hostname, private address) and every provider block's settings, and prints them
# as JSON: {"machines": [...], "providers": {"virtualbox": {"memory": 2048, ...}}}.
# Used by test_vagrantfile.py (no provider needs to be installed).
require "json"
$providers = {}
class ProviderRec
  def initialize(name); @name = name; $providers[name] ||= {}; end
  def method_missing(name, *args, &_blk)
    key = name.to_s
    raise NoMethodError, "provider #{@name}: #{key} takes one value" unless key.end_with?("=") && args.length == 1
    $providers[@name][key.chomp("=")] = args[0]
  end
  def respond_to_missing?(*) = true
end
class Recorder
  attr_reader :machines
  def initialize; @machines = []; end
  def method_missing(name, *args, &blk)
    if name == :define
      m = MachineRec.new(args[0]); blk.call(m); @machines << m.to_h
      return
    end
    if name == :provider
      blk.call(ProviderRec.new(args[0]))
      return
    end
    blk&.call(Recorder.new) ; self
  end
  def respond_to_missing?(*) = true
end
class MachineRec
  def initialize(name); @name = name; @ip = nil; @hostname = nil; end
  def vm = self
  def hostname=(v); @hostname = v; end
  def network(kind, **opts); @ip = opts[:ip]; end
  def method_missing(*args, **kw, &blk); self; end
  def respond_to_missing?(*) = true
  def to_h = { "name" => @name, "hostname" => @hostname, "address" => @ip }
end
module Vagrant
  def self.configure(_v); r = Recorder.new; yield r; $rec = r; end
end
load ARGV[0]
puts JSON.generate({ "machines" => $rec.machines, "providers" => $providers })
