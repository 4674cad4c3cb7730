"""What the benchmarks share."""

import json
from pathlib import Path


def write_result(out_dir: Path, name: str, res: dict, quiet: bool = False) -> Path:
  """Writes `res` as benchmarks/results/NAME.json (or under out_dir), replacing the file in one rename, and
  says where unless `quiet`."""
  out_dir.mkdir(parents=True, exist_ok=True)
  path = out_dir / f'{name}.json'
  tmp = path.with_suffix('.json.tmp')
  tmp.write_text(json.dumps(res, indent=1) + '\n')
  tmp.replace(path)
  if not quiet:
    print(f'wrote {path}')
  return path
