"""Probes: everything a run measures, one registered unit each (registry.py), with the built-in ones: base (losses,
norms, the step table), collapse, curvature (sharpness, Hessian trace, gradient noise), linear (deep linear
networks' modes) and similarity (drift against a reference epoch)."""

from ddjax.probes import base, collapse, curvature, linear, similarity  # noqa: F401 - registers the built-in probes
from ddjax.probes.context import EvalContext, StepContext, chunks
from ddjax.probes.registry import (PROBES, Cadence, MemoryQuery, Option, ProbeSpec, Setting, Use, cadence,
                                   describe_probes, parse_option, probe_spec, register_probe, use)

__all__ = ['PROBES', 'Cadence', 'EvalContext', 'MemoryQuery', 'Option', 'ProbeSpec', 'Setting', 'StepContext', 'Use',
           'cadence', 'chunks', 'describe_probes', 'parse_option', 'probe_spec', 'register_probe', 'use']
