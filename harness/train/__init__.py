"""Training deep methods: the contract (``deep``), one step (``step``, ``cudagraph``, ``device``),
the budgeted loop (``engine``), the trained model (``inference``), the GPU augmentation
(``augment``, ``augment_kernels``) and the building blocks methods share (``backbones``,
``losses``, ``objectives``, ``momentum``, ``queue``, ``assign``, ``schedule``, ``splitbn``)."""
