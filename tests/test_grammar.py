"""Sweep grammar (range(), choice(), quotes), YAML config files and zipped keys: pure parsing, no training."""

import pytest

from ddjax import config as cfglib
from ddjax.members import expand


def apply(*overrides, cfg=None, sweep=None):
  return cfglib.apply_overrides(cfg or cfglib.Config(), sweep or {}, list(overrides))


def swept(override):
  """The sweep (list) or scalar value that one override gives its key."""
  key = override.partition('=')[0]
  cfg, sweep = apply(override)
  return sweep.get(key, cfglib.get(cfg, key))


def one_line_error(fn, *args):
  with pytest.raises(cfglib.ConfigError) as e:
    fn(*args)
  msg = str(e.value)
  assert '\n' not in msg, msg
  return msg


# range(): Python's range, stop excluded.

@pytest.mark.parametrize('override,expected', [
    ('model.width=range(1,4)', [1, 2, 3]),
    ('model.width=range( 1 , 4 )', [1, 2, 3]),
    ('model.width=range(2,10,3)', [2, 5, 8]),
    ('model.width=range(2,11,3)', [2, 5, 8]),
    ('seed=range(5,0,-1)', [5, 4, 3, 2, 1]),
    ('seed=range(3)', [0, 1, 2]),
    ('model.seed=range(1,3)', [1, 2]),  # a nullable int key
    ('optim.wd=range(0,1,0.25)', [0.0, 0.25, 0.5, 0.75]),
    ('optim.wd=range(0,0.3,0.1)', [0.0, 0.1, 0.2]),
    ('optim.wd=range(0,0.31,0.1)', [0.0, 0.1, 0.2, 0.3]),
    ('data.noise=range(0.5,0,-0.25)', [0.5, 0.25]),
    ('optim.wd=range(0,3)', [0.0, 1.0, 2.0]),
    ('optim.lr=range(0.1,0.4,0.1)', [0.1, 0.2, 0.3]),
])
def test_range(override, expected):
  values = swept(override)
  assert values == expected
  assert all(type(v) is type(expected[0]) for v in values)


@pytest.mark.parametrize('override,needle', [
    ('model.width=range(1,4,0)', 'step of range() must not be 0'),
    ('model.width=range(3,3)', 'empty range'),
    ('model.width=range(5,1)', 'empty range'),
    ('optim.wd=range(1,0,0.5)', 'empty range'),
    ('model.name=range(1,3)', "bad sweep 'range(1,3)' for model.name: range() needs a numeric key"),
    ('train.keep_best=range(0,2)', 'range() needs a numeric key'),
    ('data.dir=range(0,2)', 'range() needs a numeric key'),
    ('model.width=range(1,3,0.5)', 'range() arguments must be integers'),
    ('optim.wd=range(0,a)', 'range() arguments must be numbers'),
    ('optim.wd=range(0,inf)', 'must be finite'),
    ('model.width=range()', 'expected range(start, stop)'),
    ('model.width=range(1,2,3,4)', 'expected range(start, stop)'),
    ('model.width=range(1,,3)', 'expected range(start, stop)'),
    ('model.width=range(0,3)', 'bad value 0 for model.width: must be >= 1'),  # still validated
])
def test_range_errors(override, needle):
  msg = one_line_error(apply, override)
  assert needle in msg, msg


# Quotes: one quoted value is one scalar; elements of a list may be quoted.

@pytest.mark.parametrize('override,expected', [
    ("data.dir='a,b'", 'a,b'),
    ('data.dir="a,b"', 'a,b'),
    ("data.dir=' a b '", ' a b '),             # verbatim inside quotes
    ("data.dir='none'", 'none'),               # a string, not null
    ('data.dir=none', None),
    ("data.dir='../cifar,10'", '../cifar,10'),
    ('data.dir=../cifar', '../cifar'),         # `..` is text on a free-text key
    ("data.dir=bob's", "bob's"),              # a quote inside unquoted text is a plain character
    ('data.dir="it\'s, here"', "it's, here"),
    ("data.groups='9/4/2+10/5/3'", '9/4/2+10/5/3'),
    ("model.width='3'", 3),                    # quotes are dropped on non-string keys
    ("model.seed='none'", None),
    ("optim.lr=' 0.01 '", 0.01),
    ("model.name='mlp'", 'mlp'),
    ("model.width='1..4'", None),              # see below: not a range, an error
])
def test_quoted_scalars(override, expected):
  if override == "model.width='1..4'":
    assert 'expected an integer' in one_line_error(apply, override)
    return
  key = override.partition('=')[0]
  cfg, sweep = apply(override)
  assert cfglib.get(cfg, key) == expected and key not in sweep


@pytest.mark.parametrize('override,expected', [
    ("data.dir='x,y',z", ['x,y', 'z']),
    ('data.dir=z, "x,y"', ['z', 'x,y']),
    ("data.dir='a','b'", ['a', 'b']),
    ("data.dir='',x", ['', 'x']),
    ("seed='1',2", [1, 2]),
    ("model.conv='lax' , im2col", ['lax', 'im2col']),
])
def test_quoted_list_elements(override, expected):
  assert swept(override) == expected


@pytest.mark.parametrize('override,needle', [
    ("data.dir='a,b", 'unbalanced \' quote'),
    ('data.dir=x,"a', 'unbalanced " quote'),
    ("data.dir='a'b", 'text after a closing quote'),
    ("data.dir='a' b,c", 'text after a closing quote'),
    ("model.name='mlp ' ", 'allowed values are'),
    ("model.width='x'", "bad value 'x' for model.width: expected an integer"),
])
def test_quote_errors(override, needle):
  msg = one_line_error(apply, override)
  assert needle in msg, msg


def test_mheight_groups_sweep_and_quoted_group():
  base = ('model.name=mlp', 'data.name=mheight')
  _, sweep = apply(*base, 'data.groups=9/4/2,10/5/3')
  assert sweep['data.groups'] == ['9/4/2', '10/5/3']
  cfg, sweep = apply(*base, "data.groups='9/4/2+10/5/3'")
  assert cfg.data.groups == '9/4/2+10/5/3' and 'data.groups' not in sweep


# choice(): a synonym of a,b,c.

@pytest.mark.parametrize('override,expected', [
    ('seed=choice(0,1,2)', [0, 1, 2]),
    ('model.conv=choice(lax, im2col)', ['lax', 'im2col']),
    ("data.dir=choice('a,b',c)", ['a,b', 'c']),
    ('seed=choice(3)', [3]),  # one value, still a sweep
    ('model.seed=choice(none,4)', [None, 4]),
])
def test_choice(override, expected):
  assert swept(override) == expected


@pytest.mark.parametrize('override,needle', [
    ('seed=choice()', 'empty value in the list'),
    ('seed=choice(1,,2)', 'empty value in the list'),
    ('model.conv=choice(lax,fast)', 'allowed values are auto, lax, im2col'),
])
def test_choice_errors(override, needle):
  assert needle in one_line_error(apply, override)


# The older syntax behaves as before.

@pytest.mark.parametrize('override,expected', [
    ('model.width=1..4', [1, 2, 3, 4]),
    ('model.width=2..10..4', [2, 6, 10]),
    ('seed=0,1', [0, 1]),
    ('seed= 0 , 1 ', [0, 1]),
    ('optim.lr=0.1..0.3..0.1', [0.1, 0.2, 0.3]),
    ('optim.lr=0.001..0.002..0.0006', [0.001, 0.0016]),
    ('model.conv=lax,im2col', ['lax', 'im2col']),
    ('model.seed=none', None),
    ('model.seed=null,3', [None, 3]),
    ('train.keep_best=yes', True),
    ('data.groups=9/4/2', '9/4/2'),
    ('model.width=7', 7),
])
def test_old_syntax(override, expected):
  assert swept(override) == expected


@pytest.mark.parametrize('override,needle', [
    ('model.name=mlp..cnn1d', 'need a numeric key'),
    ('model.width=5..2', 'need a <= b'),
    ('model.width=1..2..0', 'step > 0'),
    ('model.width=1,,2', 'empty value'),
    ('model.width=1,', 'empty value'),
    ('model.width=1..2..3..4', 'need a numeric key'),
])
def test_old_syntax_errors(override, needle):
  assert needle in one_line_error(apply, override)


# YAML config files.

def load(tmp_path, text, cfg=None, sweep=None, name='run.yaml'):
  path = tmp_path / name
  path.write_text(text)
  return cfglib.load_config_file(path, cfg or cfglib.Config(), sweep or {})


def test_yaml_nested_dotted_and_mixed(tmp_path):
  cfg, sweep, zips = load(tmp_path, """
optim:
  lr: 0.01
  name: sgd
model.width: 8
train:
  epochs: 3
  keep_best: true
model:
  seed: null
data.dir: "'a,b'"        # YAML strings go through parse_values: inner quotes make one string
optim.wd: 0              # an int for a float key
""")
  assert (cfg.optim.lr, cfg.optim.name, cfg.model.width, cfg.train.epochs) == (0.01, 'sgd', 8, 3)
  assert cfg.train.keep_best is True and cfg.model.seed is None and cfg.data.dir == 'a,b'
  assert cfg.optim.wd == 0.0 and type(cfg.optim.wd) is float
  assert sweep == {} and zips == []


def test_yaml_sweeps(tmp_path):
  cfg, sweep, _ = load(tmp_path, """
model.width: [2, 4, 8]
seed: "0..2"
optim:
  wd: range(0, 0.3, 0.1)
  lr: [1e-3, 0.01]        # PyYAML reads 1e-3 as a string; it is parsed like command-line text
model.conv: lax,im2col
data.noise: choice(0, 0.1)
model.seed: [null, 5]
data.groups: '9/4/2,10/5/3'  # YAML's quotes are YAML's: still a list
""", sweep={'train.batch_size': [50, 100]})
  assert sweep == {'train.batch_size': [50, 100], 'model.width': [2, 4, 8], 'seed': [0, 1, 2],
                   'optim.wd': [0.0, 0.1, 0.2], 'optim.lr': [0.001, 0.01], 'model.conv': ['lax', 'im2col'],
                   'data.noise': [0.0, 0.1], 'model.seed': [None, 5],
                   'data.groups': ['9/4/2', '10/5/3']}
  assert cfg.model.width == 2 and cfg.optim.lr == 0.001


def test_yaml_scalar_clears_a_sweep_and_empty_files(tmp_path):
  cfg, sweep, _ = load(tmp_path, 'model.width: 5\n', sweep={'model.width': [1, 2], 'seed': [0, 1]})
  assert cfg.model.width == 5 and sweep == {'seed': [0, 1]}
  for text in ('', '# only a comment\n', 'optim:\n'):
    cfg, sweep, zips = load(tmp_path, text, sweep={'seed': [0, 1]})
    assert cfg == cfglib.Config() and sweep == {'seed': [0, 1]} and zips == []


def test_yaml_zip_groups(tmp_path):
  cfg, sweep, zips = load(tmp_path, """
optim: {lr: [0.1, 0.2, 0.3], wd: [0, 0.01, 0.02]}
seed: [0, 1]
model.seed: [3, 4]
zip:
  - [optim.lr, optim.wd]
  - seed, model.seed
""")
  assert zips == [['optim.lr', 'optim.wd'], ['seed', 'model.seed']]
  (job,) = expand(cfg, sweep, zips)
  assert [(m['optim.lr'], m['optim.wd'], m['seed'], m['model.seed']) for m in job.members] == [
      (lr, wd, s, ms) for lr, wd in [(0.1, 0.0), (0.2, 0.01), (0.3, 0.02)] for s, ms in [(0, 3), (1, 4)]]


@pytest.mark.parametrize('text,needle', [
    ('model.width: 3.0', 'bad value 3.0 for model.width: expected an integer, got a number'),
    ('model.width: true', 'expected an integer, got true or false'),
    ('model.width: null', 'expected an integer, got null'),
    ('model.seed: 1.5', 'expected an integer or null, got a number'),
    ('train.keep_best: 1', 'expected true or false, got an integer'),
    ('data.dir: 12', 'expected a string (quote it) or null, got an integer'),
    ('model.name: 3', 'expected a string (quote it), got an integer'),
    ('model.name: rnn', 'allowed values are'),
    ('model.width: [2, 2.5]', 'bad value 2.5 for model.width'),
    ('model.width: [[2]]', 'got a list'),
    ('model.width: []', 'no values'),
    ('optim.lr: {a: 1}', 'expected a number, got a mapping'),
    ('optim.lr: .inf', 'bad value inf for optim.lr: expected a finite number'),
    ('optim.wd: [0, .nan]', 'bad value nan for optim.wd: expected a finite number'),
    ('model.width: 0', 'bad value 0 for model.width: must be >= 1'),
    ('model.width: "range(3,1)"', 'empty range'),
    ('optim.lrr: 0.1', "unknown key 'optim.lrr': did you mean optim.lr?"),
    ('optim: {lrr: 0.1}', "unknown key 'optim.lrr': did you mean optim.lr?"),
    ('optim: 3', 'optim holds keys such as optim.b1: give it a mapping'),
    ('1: 2', "key '1' is not a string"),
    ('optim: {lr: 0.1}\noptim.lr: 0.2', 'optim.lr is given twice'),
    ('seed: 1\nseed: 2', "invalid YAML at line 2, column 1: key 'seed' is given twice"),
    ('model:\n  width: [1, 2\n', 'invalid YAML at line 3'),
    ('a: b: c', 'invalid YAML at line 1, column 5'),
    ('- model.width=3', 'the top level must be a mapping of keys to values, got a list'),
    ('just text', 'the top level must be a mapping of keys to values, got a string'),
    ('zip: 3', 'zip must be a list of key groups'),
    ('zip: [[optim.lr, 3]]', 'zip must be a list of key groups'),
    ('zip: [[optim.lr, optim.lrr]]', "unknown key 'optim.lrr': did you mean optim.lr?"),
    ('zip: [[optim.lr]]', 'a zip group needs two or more keys'),
])
def test_yaml_errors_are_one_line_and_name_the_file(tmp_path, text, needle):
  msg = one_line_error(load, tmp_path, text)
  assert msg.startswith(f'config file {tmp_path / "run.yaml"}: ') and needle in msg, msg


def test_yaml_missing_and_unreadable_files(tmp_path):
  missing = tmp_path / 'nope.yaml'
  msg = one_line_error(cfglib.load_config_file, missing, cfglib.Config(), {})
  assert msg == f'config file {missing}: no such file'
  msg = one_line_error(cfglib.load_config_file, tmp_path, cfglib.Config(), {})
  assert msg.startswith(f'config file {tmp_path}: cannot read it')
  (tmp_path / 'bin.yaml').write_bytes(b'\xff\xfe\x00')
  assert 'cannot read it' in one_line_error(cfglib.load_config_file, tmp_path / 'bin.yaml', cfglib.Config(), {})


# Zipped keys.

def test_zip_member_keys_with_a_cartesian_third():
  cfg, sweep = apply('model.width=2,4', 'optim.lr=0.1,0.2,0.3', 'optim.wd=0,0.01,0.02', 'seed=0,1')
  (job,) = expand(cfg, sweep, [['optim.lr', 'optim.wd']])
  assert len(job.members) == 2 * 3 * 2 and job.static == {}
  # Axes keep the sweep order: width, then the (lr, wd) group at lr's place, then seed.
  assert [(m['model.width'], m['optim.lr'], m['optim.wd'], m['seed']) for m in job.members] == [
      (w, lr, wd, s) for w in (2, 4) for lr, wd in [(0.1, 0.0), (0.2, 0.01), (0.3, 0.02)] for s in (0, 1)]
  assert len(expand(cfg, sweep)[0].members) == 2 * 3 * 3 * 2


def test_two_zip_groups_combine_crosswise():
  cfg, sweep = apply('optim.lr=0.1,0.2', 'optim.wd=0,0.01', 'seed=0,1,2', 'model.seed=5,6,7')
  (job,) = expand(cfg, sweep, [['seed', 'model.seed'], ['optim.wd', 'optim.lr']])
  assert [(m['optim.lr'], m['optim.wd'], m['seed'], m['model.seed']) for m in job.members] == [
      (lr, wd, s, s + 5) for lr, wd in [(0.1, 0.0), (0.2, 0.01)] for s in (0, 1, 2)]


def test_zip_group_with_a_static_key_makes_jobs():
  cfg, sweep = apply('train.batch_size=50,100', 'optim.lr=0.1,0.2', 'seed=0,1', 'model.width=2,4')
  jobs = expand(cfg, sweep, [['optim.lr', 'train.batch_size']])
  assert [j.static for j in jobs] == [{'optim.lr': 0.1, 'train.batch_size': 50},
                                      {'optim.lr': 0.2, 'train.batch_size': 100}]
  assert [j.index for j in jobs] == [0, 1]
  for job, lr, b in zip(jobs, (0.1, 0.2), (50, 100)):
    assert job.config.optim.lr == lr and job.config.train.batch_size == b
    assert len(job.members) == 4 and {m['optim.lr'] for m in job.members} == {lr}
    assert [(m['seed'], m['model.width']) for m in job.members] == [(s, w) for s in (0, 1) for w in (2, 4)]
  assert len(expand(cfg, sweep)) == 2 and len(expand(cfg, sweep)[0].members) == 8  # unzipped: lr is a member


def test_zip_of_static_keys_and_no_zip_is_unchanged():
  cfg, sweep = apply('data.num_samples=100,200,300', 'train.batch_size=10,20,30', 'data.seed=1,2')
  jobs = expand(cfg, sweep, [['data.num_samples', 'train.batch_size']])
  assert [j.static for j in jobs] == [{'data.num_samples': n, 'train.batch_size': b, 'data.seed': s}
                                      for n, b in [(100, 10), (200, 20), (300, 30)] for s in (1, 2)]
  assert len(expand(cfg, sweep)) == 18
  assert expand(cfg, sweep) == expand(cfg, sweep, [])


def test_parse_zip():
  assert cfglib.parse_zip('optim.lr, optim.wd') == ['optim.lr', 'optim.wd']
  assert cfglib.parse_zip('seed,model.seed,optim.lr') == ['seed', 'model.seed', 'optim.lr']


@pytest.mark.parametrize('text,needle', [
    ('optim.lr,', "bad --zip 'optim.lr,': empty key"),
    ('optim.lr', 'a zip group needs two or more keys'),
    ('optim.lrr,optim.wd', "--zip optim.lrr,optim.wd: unknown key 'optim.lrr': did you mean optim.lr?"),
    ('optim.lr,optim.lr', 'optim.lr is twice in this group'),
])
def test_parse_zip_errors(text, needle):
  msg = one_line_error(cfglib.parse_zip, text)
  assert needle in msg, msg


@pytest.mark.parametrize('groups,needle', [
    ([['optim.lr', 'optim.wd']], '--zip optim.lr,optim.wd: optim.lr has 3 values, optim.wd has 2'),
    ([['optim.lr', 'optim.wd', 'seed']], 'optim.lr has 3 values, optim.wd has 2, seed has 3'),
    ([['optim.lr', 'optim.b1']], '--zip optim.lr,optim.b1: optim.b1 is not swept'),
    ([['optim.b2', 'optim.b1']], 'optim.b2, optim.b1 are not swept'),
    ([['optim.lr', 'seed'], ['seed', 'optim.wd']], '--zip seed,optim.wd: seed is also in --zip optim.lr,seed'),
    ([['optim.lr', 'seed', 'optim.lr']], 'optim.lr is twice in this group'),
    ([['optim.lr', 'nokey']], "unknown key 'nokey'"),
    ([['optim.lr']], 'a zip group needs two or more keys'),
])
def test_zip_errors(groups, needle):
  cfg, sweep = apply('optim.lr=0.1,0.2,0.3', 'optim.wd=0,0.1', 'seed=0,1,2')
  msg = one_line_error(cfglib.check_zip, sweep, groups)
  assert needle in msg, msg
  assert msg == one_line_error(expand, cfg, sweep, groups)
