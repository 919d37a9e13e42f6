"""The packaged demo: its configuration (demo.yaml) and the demo relying party (app.py)."""
