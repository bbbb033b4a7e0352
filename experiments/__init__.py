"""Scripts that reproduce the paper's experiments; run each as ``python experiments/<name>.py --out DIR``."""
