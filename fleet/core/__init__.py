"""The ground every room stands on: records and state machines, errors,
configuration, the home, process identity and containment, wake-ups, secrets."""
