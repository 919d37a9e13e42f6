"""Real peers started by the test tooling on 127.0.0.1 and stopped after the run.

In CI (``CI=true``) a missing peer is a failure, never a skip (see :func:`missing`).
"""
