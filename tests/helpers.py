"""Small builders shared by the tests."""

import jax
import jax.numpy as jnp
import numpy as np

from ddjax.members import stack_hp


def hp_for(widths, **overrides):
  """Stacked per-member numbers for members of the given widths (defaults of the config otherwise)."""
  from ddjax import config
  members = []
  for i, w in enumerate(widths):
    m = {k: config.get(config.Config(), k) for k in config.MEMBER_KEYS}
    m['model.width'] = w
    for k, v in overrides.items():
      m[k] = v[i] if isinstance(v, (list, tuple)) else v
    members.append(m)
  return {k: jnp.asarray(v) for k, v in stack_hp(members).items()}


def run_experiment(name: str, out, *args: str, timeout: float = 600, env=None) -> str:
  """`python -m experiments.NAME --out OUT *args` in a subprocess, as a user runs it; fails the test with the end of
  its stderr unless it exits with 0. Returns its stdout."""
  import subprocess
  import sys
  proc = subprocess.run([sys.executable, '-m', f'experiments.{name}', '--out', str(out), *args], capture_output=True,
                        text=True, timeout=timeout, env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout


def unstack(tree, i):
  import jax
  return jax.tree.map(lambda x: x[i], tree)


def close(a, b, rtol: float = 1e-5):
  """Every leaf of tree a equals b's to rtol, with absolute slack rtol times b's largest magnitude (never below
  1e-6): float32 sums of many terms round relative to their largest term."""
  def check(x, y):
    x, y = np.asarray(x), np.asarray(y)
    np.testing.assert_allclose(x, y, rtol=rtol, atol=max(1e-6, rtol * float(np.abs(y).max(initial=0.0))))
  jax.tree.map(check, a, b)


def two_processes(*args: str, devices: int = 1, timeout: float = 300) -> list[tuple[int, str, str]]:
  """(exit status, stdout, stderr) of `python *args` run as both processes of a jax.distributed run on this machine
  (DDJAX_COORDINATOR on a free local port), each with `devices` simulated CPU devices."""
  import os
  import socket
  import subprocess
  import sys
  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  procs = [subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
                                     DDJAX_COORDINATOR=f'localhost:{port}', DDJAX_NUM_PROCESSES='2',
                                     DDJAX_PROCESS_ID=str(pid)))
           for pid in range(2)]
  try:
    outputs = [p.communicate(timeout=timeout) for p in procs]
  finally:
    for p in procs:  # a hung process (one waiting in a collective the other left) must not outlive the test
      p.kill()
  return [(p.returncode, stdout, stderr) for p, (stdout, stderr) in zip(procs, outputs)]
