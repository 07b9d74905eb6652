"""Run records: atomic file writes (``io``), the record format (``schema``), the results directory (``store``)
and the environment a run is recorded with (``envinfo``)."""
