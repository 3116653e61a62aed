# Loads the Vagrantfile with a stand-in Vagrant that records each machine it defines
# (name, hostname, private address) and prints them as JSON. Used by test_vagrantfile.py.
require "json"
class Recorder
  attr_reader :machines
  def initialize; @machines = []; end
  def method_missing(name, *args, &blk)
    if name == :define
      m = MachineRec.new(args[0]); blk.call(m); @machines << m.to_h
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
puts JSON.generate($rec.machines)
