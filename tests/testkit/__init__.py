"""Test support: the only fakes are at the boundary a CPU cannot cross (inference server, remote user model)."""
