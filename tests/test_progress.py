"""Progress in a log: plain lines at most every 30 s and at the last epoch, never a carriage return."""

import io

from ddjax import progress


def test_log_lines_every_30_seconds_and_at_the_end():  # a job resumed after epoch 2
  clock = iter(range(0, 1000, 10))  # 10 s an epoch
  out = io.StringIO()
  bar = progress.LogLines(range(3, 11), 'job 2/4', initial=2, total=10, file=out, clock=lambda: next(clock))
  seen = []
  for epoch in bar:
    seen.append(epoch)
    bar.set_postfix_str(f'test error {epoch / 100:.2f}')
  bar.close()
  lines = out.getvalue().splitlines()
  assert seen == list(range(3, 11)) and '\r' not in out.getvalue()
  assert lines == ['job 2/4: epoch 5/10 (50%), 10 s/epoch, 50 s left, test error 0.05',
                   'job 2/4: epoch 8/10 (80%), 10 s/epoch, 20 s left, test error 0.08',
                   'job 2/4: epoch 10/10 (100%), 10 s/epoch, 0 s left, test error 0.10']


def test_a_terminal_gets_the_bar_and_a_log_gets_lines(monkeypatch):
  monkeypatch.setattr(progress.sys.stderr, 'isatty', lambda: False, raising=False)
  assert isinstance(progress.epochs_progress(range(1, 3), 'job 1/1', 0, 2, True), progress.LogLines)
  off = progress.epochs_progress(range(1, 3), 'job 1/1', 0, 2, False)  # --no-progress: the epochs, silently
  assert not isinstance(off, progress.LogLines) and list(off) == [1, 2]
  assert not progress._terminal(None) and not progress._terminal(io.StringIO())  # no stream; a file
  monkeypatch.setattr(progress.sys.stderr, 'isatty', lambda: True, raising=False)
  from tqdm import tqdm
  assert isinstance(progress.epochs_progress(range(1, 3), 'job 1/1', 0, 2, True), tqdm)
