"""Imported by the fork server of :mod:`bowlrp.app.process_pool` (and nowhere else): work every
worker would otherwise repeat, done once before the workers are forked.

numba sets up its CPU target (the lowering registries: ``numba.np.arraymath`` and friends) the first
time a kernel is compiled or loaded from the disk cache; about 0.05-0.1 s per process. Nothing here
starts a thread, so forking the server afterwards stays safe.
"""

from numba.core.registry import cpu_target

cpu_target.target_context.refresh()
