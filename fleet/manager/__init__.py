"""The manager daemon: supervision of workers, leases, the working-hours driver."""
