"""Pure policy: queue specs, GPU allocation, effective state, working hours,
queue order and the plan of an ``up``. No I/O: every function here is a decision."""
