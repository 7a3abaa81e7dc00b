"""The simulated seafood company (`manage.py simulate`, `serve --demo`): see engine.py."""
