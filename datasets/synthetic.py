"""Synthetic polygon/circle scenes: the generator lives in the installed package
(:mod:`bowlrp.app.scenes`, the demo needs it outside a checkout); re-exported here for the experiments."""

from bowlrp.app.scenes import BACKGROUNDS, Scenes, make_scenes

__all__ = ["BACKGROUNDS", "Scenes", "make_scenes"]
