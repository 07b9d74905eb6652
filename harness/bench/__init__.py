"""``clusterbench bench``: the command (``command``), the step timings (``steps``, ``steppers``,
``timing``), the PIL baseline (``pil``), and k-means and metrics timings (``kmeans_bench``)."""
