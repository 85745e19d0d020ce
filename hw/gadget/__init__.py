"""Gadget phones: the simulated phones of ``hw.sim`` on a real Linux USB bus (dummy_hcd + FunctionFS).

They live in ``hw/`` beside the simulators they reuse (``hw.sim``'s phones, daemons and iBoot),
not under ``tests/``: they run inside the appliance's VM from the station's own installed
package (``image/hil.py``), as root, the one place that has a kernel with a gadget side.
"""
