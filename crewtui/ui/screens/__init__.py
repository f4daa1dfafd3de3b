"""The dashboard's modal screens: spawn, steer, confirm (kill, sweep), quit and help."""
