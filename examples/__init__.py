"""Example apps using the Isthmus SDK (federation.sdk); see docs/examples.md."""
