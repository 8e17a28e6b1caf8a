"""Looking inside guests (libguestfs) and the pre-flight rules.

Named vmshift.inspect, never a top-level inspect, which would shadow the stdlib."""
