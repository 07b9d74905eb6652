"""Scaling a grid out on engines people already run: worker processes on one host, a submitit job
array on SLURM (or submitit's local executor), shards for machines without a scheduler, and the
commands that go with them (``status``, ``merge``).  Nothing here schedules by itself: the cells
are the runner's (:mod:`clusterbench.runner`), the locks are the store's, the queue is submitit's
or :mod:`concurrent.futures`'.
"""
