"""Benchmarks of the worker: pure inference, end to end through Kafka + Redis, a baseline consumer, and GPU.

Run ``python -m bench --help`` (CPU, needs the local stack) or ``bench/gpu.sh`` (GPU, no Kafka). Outputs go to
``bench/out/`` (git-ignored) unless ``--out``/``$OUT`` says otherwise.
"""
