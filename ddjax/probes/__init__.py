"""Probes: everything a run measures, one registered unit each (registry.py), with the built-in ones: base (losses,
norms, the step table), collapse, curvature (sharpness, Hessian trace, gradient noise), linear (deep linear
networks' modes and layer metrics), similarity (drift against a reference epoch) and comparative (pairs of
members trained in lockstep)."""

from ddjax.probes import base, collapse, comparative, curvature, linear, similarity  # noqa: F401 - registers them
from ddjax.probes.context import EvalContext, StepContext, chunks
from ddjax.probes.registry import (PROBES, Cadence, MemoryQuery, Option, ProbeSpec, Setting, Use, cadence,
                                   describe_probes, parse_option, probe_spec, register_probe, use)

__all__ = ['PROBES', 'Cadence', 'EvalContext', 'MemoryQuery', 'Option', 'ProbeSpec', 'Setting', 'StepContext', 'Use',
           'cadence', 'chunks', 'describe_probes', 'parse_option', 'probe_spec', 'register_probe', 'use']
