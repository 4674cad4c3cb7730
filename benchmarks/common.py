"""What the benchmarks share."""

import json
from pathlib import Path


def write_result(out_dir: Path, name: str, res: dict) -> Path:
  """Writes `res` as benchmarks/results/NAME.json (or under out_dir) and says where."""
  out_dir.mkdir(parents=True, exist_ok=True)
  path = out_dir / f'{name}.json'
  path.write_text(json.dumps(res, indent=1) + '\n')
  print(f'wrote {path}')
  return path
