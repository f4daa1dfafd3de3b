"""The control socket: a JSON-lines server inside the runtime and the client `crewtui ctl` and agents use."""
