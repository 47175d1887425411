"""The run engine: the run directory (:mod:`.rundir`), what a run records (:mod:`.records`) and the
step with what surrounds it (:mod:`.step`). Imports go one way: cli -> train -> engine -> core."""
