"""Config loading: every training config file loads; unknown keys and bad types are one-line errors."""
import re
from pathlib import Path

import pytest
import yaml

from mmkd_ros.train import config as config_lib
from mmkd_ros.core.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"


def training_configs() -> list[Path]:
    """YAML files of config/ that are training configs (ROS parameter files have ros__parameters)."""
    return [p for p in sorted(CONFIG_DIR.glob("*.yaml")) if "ros__parameters" not in p.read_text()]


def test_there_is_a_training_config():
    assert CONFIG_DIR / "train.yaml" in training_configs()


@pytest.mark.parametrize("path", training_configs(), ids=lambda p: p.name)
def test_training_config_loads_and_round_trips(path):
    cfg = config_lib.load(path)
    assert config_lib.from_dict(config_lib.to_dict(cfg)) == cfg
    assert cfg.distill.method in config_lib.METHODS


def test_train_yaml_states_every_default():
    """train.yaml is the documented list of knobs: it names every field and agrees with the defaults."""
    assert config_lib.to_dict(config_lib.load(CONFIG_DIR / "train.yaml")) == config_lib.to_dict(config_lib.Config())
    assert set(yaml.safe_load((CONFIG_DIR / "train.yaml").read_text())) == set(config_lib.to_dict(config_lib.Config()))


def test_overrides_apply_after_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("distill:\n  w_adv: 0.2\n  method: kd\n")
    cfg = config_lib.load(path, ["distill.w_adv=1", "data.input_size=[112, 112]", "distill.gan_loss=hinge",
                                 "distill.method=adv"])
    assert cfg.distill.w_adv == 1.0 and isinstance(cfg.distill.w_adv, float)
    assert cfg.distill.method == "adv"
    assert cfg.data.input_size == (112, 112)
    assert cfg.distill.gan_loss == "hinge"


@pytest.mark.parametrize("override,message", [
    ("distill.w_adb=1", "unknown config key 'distill.w_adb'"),
    ("optimizer.lr=1", "unknown config key 'optimizer'"),
    ("data.batch_size=1.5", "data.batch_size must be int"),
    ("data.augment=3", "data.augment must be bool"),
    ("distill.method=gan", "distill.method='gan' is not allowed"),
    ("data.input_size=96", "data.input_size must be a list of 2"),
    ("teacher.arch=7", "teacher.arch must be str"),
    ("distill", "must look like section.key=value"),
    ("distill.lr=-0.1", "distill.lr=-0.1 is out of range; use a finite number > 0"),
    ("teacher.lr=.nan", "teacher.lr=nan is out of range; use a finite number > 0"),
    ("teacher.lr=.inf", "teacher.lr=inf is out of range; use a finite number > 0"),
    ("distill.lr=0", "distill.lr=0.0 is out of range; use a finite number > 0"),
    ("data.batch_size=0", "data.batch_size=0 is out of range; use an integer >= 1"),
    ("teacher.epochs=-1", "teacher.epochs=-1 is out of range; use an integer >= 1"),
    ("distill.epochs=0", "distill.epochs=0 is out of range; use an integer >= 1"),
    ("teacher.epochs=true", "teacher.epochs must be int"),
    ("distill.w_ce=-1", "distill.w_ce=-1.0 is out of range; use a finite number >= 0"),
    ("distill.w_adv=.nan", "distill.w_adv=nan is out of range; use a finite number >= 0"),
    ("teacher.weight_decay=.inf", "teacher.weight_decay=inf is out of range; use a finite number >= 0"),
    ("teacher.dropout=1", "teacher.dropout=1.0 is out of range; use a number in [0, 1)"),
    ("teacher.nir_dropout=1", "teacher.nir_dropout=1.0 is out of range; use a number in [0, 1)"),
    ("student.width=0", "student.width=0.0 is out of range; use a finite number > 0"),
    ("data.num_workers=-1", "data.num_workers=-1 is out of range; use an integer >= 0"),
    ("distill.disc_hidden=0", "distill.disc_hidden=0 is out of range; use an integer >= 1"),
    ("data.val_fraction=.nan", "data.val_fraction=nan is out of range; use a number in [0, 1)"),
    ("data.max_unlabelled_share=1", "data.max_unlabelled_share=1.0 is out of range; use a number in [0, 1)"),
    ("data.max_unlabelled_share=0", "data.max_unlabelled_share=0 would never draw a pair without a label"),
    ("data.trusted_unlabelled_share=0.4", "data.trusted_unlabelled_share=0.4 is below data.max_unlabelled_share=0.5"),
    ("distill.lr=nan", "distill.lr=nan is out of range; use a finite number > 0"),
    ("teacher.fuse_at=4", "teacher.fuse_at=4 is out of range; use 1, 2 or 3"),
])
def test_bad_overrides_are_one_line_config_errors(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        config_lib.load(None, [override])
    assert "\n" not in str(info.value)


def test_bad_files_are_config_errors(tmp_path):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config_lib.load(bad_yaml)
    with pytest.raises(ConfigError, match="cannot read config"):
        config_lib.load(tmp_path / "missing.yaml")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("teacher:\n  widht: 0.5\n")
    with pytest.raises(ConfigError, match="unknown config key 'teacher.widht'"):
        config_lib.load(unknown)


def test_dump_writes_a_loadable_file(tmp_path):
    cfg = config_lib.load(None, ["seed=3"])
    config_lib.dump(cfg, tmp_path / "resolved.yaml")
    assert config_lib.load(tmp_path / "resolved.yaml") == cfg


@pytest.mark.parametrize("method,setting", [
    ("adv", "distill.w_kd=2"), ("ce", "distill.w_adv=1"), ("kd", "distill.disc_hidden=16"),
    ("feat_l2", "distill.focus_floor=1"), ("adv+kd", "distill.w_feat=3"), ("adv+kd+feat", "distill.w_hall=2"),
])
def test_a_setting_of_a_term_the_method_lacks_is_refused(method, setting):
    with pytest.raises(ConfigError, match=re.escape(f"has no effect under distill.method={method}")) as info:
        config_lib.load(None, [f"distill.method={method}", setting])
    assert "\n" not in str(info.value) and setting.split("=")[0] in str(info.value)


def test_every_method_is_a_row_of_known_terms_and_its_settings_are_accepted():
    for method, terms in config_lib.METHODS.items():
        assert terms[0] == "ce" and set(terms) <= set(config_lib.TERM_FIELDS)
        used = {name for term in terms for name in config_lib.TERM_FIELDS[term]}
        overrides = [f"distill.method={method}"] + [f"distill.{name}={value}" for name, value in
                                                     (("w_kd", 2.0), ("w_adv", 0.3), ("w_feat", 2.0), ("w_hall", 0.5))
                                                     if name in used]
        config_lib.load(None, overrides)  # no error: these terms read them


def test_with_method_resets_the_settings_of_terms_the_new_method_lacks():
    cfg = config_lib.load(None, ["distill.method=adv", "distill.disc_hidden=16", "distill.w_adv=0.3"])
    kd = config_lib.with_method(cfg, "kd")
    assert kd.distill.method == "kd" and kd.distill.disc_hidden == 256 and kd.distill.w_adv == 0.5
    assert config_lib.with_method(cfg, "adv+kd").distill.disc_hidden == 16  # still used there


def test_yaml_errors_name_the_line(tmp_path):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("seed: 1\ndata:\n  batch_size: [1\n  augment: true\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:4:\d+ is not valid YAML"):
        config_lib.load(bad_yaml)


def test_numbers_yaml_reads_as_strings_are_numbers():
    """YAML 1.1 reads 1e-3 (no dot) as a string; a float setting takes it as the number it spells."""
    assert config_lib.load(None, ["distill.lr=1e-3"]).distill.lr == 0.001
    with pytest.raises(ConfigError, match="distill.lr must be float, got str 'fast'"):
        config_lib.load(None, ["distill.lr=fast"])
