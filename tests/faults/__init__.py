"""Fault suite: the worker against real Kafka and Redis processes that are killed, paused and restarted.

Run all scenarios with ``python -m tests.faults`` (see README); ``test_faults_ci.py`` runs the fast subset.
"""
