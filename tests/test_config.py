import re
from collections import defaultdict
from pathlib import Path

import pytest

from sgns_spark.config import AUTOMATIC, Config, declared_settings, default_toml, load_config, settings_markdown
from sgns_spark.errors import UserError

REPOSITORY = Path(__file__).resolve().parents[1]
DEFAULT_TOML = REPOSITORY / "conf" / "default.toml"
README = REPOSITORY / "README.md"
TABLE_BEGIN, TABLE_END = "<!-- settings table: generated -->\n", "<!-- end of settings table -->"
ROOM_FOR = defaultdict(tuple, {"train.batch_pairs": ("train.noise_pool=100000",),  # the rule tying the two
                               "train.noise_pool": ("train.batch_pairs=1",)})
BOUNDED = [(f"{section}.{item.name}", declaration) for section, item, declaration in declared_settings()
           if declaration.low is not None and not declaration.memory]


def test_default_toml_is_generated_from_the_declarations():
    assert DEFAULT_TOML.read_text(encoding="utf-8") == default_toml(), (
        "conf/default.toml drifted; regenerate it with python -m sgns_spark.config toml > conf/default.toml")
    assert load_config(DEFAULT_TOML) == load_config(None)


def test_readme_settings_table_is_generated_from_the_declarations():
    readme = README.read_text(encoding="utf-8")
    table = readme.split(TABLE_BEGIN, 1)[1].split(TABLE_END, 1)[0]
    assert table == settings_markdown(), "README's settings table drifted; paste python -m sgns_spark.config markdown"


def test_every_setting_is_documented_and_typed_like_its_default():
    for section, item, declaration in declared_settings():
        assert declaration.doc, f"{section}.{item.name} has no documentation"
        assert item.type in ("int", "float", "str", "bool", "tuple[str, ...]"), item.type


def test_overrides_are_typed_and_applied():
    config = load_config(None, ["train.epochs=5", "spark.master=local[2]", "vocab.sample=0",
                                "evaluate.neighbour_words=paris,king", "corpus.lowercase=false"])
    assert config.train.epochs == 5
    assert config.spark.master == "local[2]"
    assert config.vocab.sample == 0.0 and isinstance(config.vocab.sample, float)
    assert config.evaluate.neighbour_words == ("paris", "king")
    assert config.corpus.lowercase is False


def test_config_is_frozen():
    with pytest.raises(AttributeError):
        Config().train.epochs = 3


@pytest.mark.parametrize("name,declaration", BOUNDED, ids=[name for name, _ in BOUNDED])
def test_every_declared_range_is_enforced_with_the_field_named(name, declaration):
    section, key = name.split(".")
    is_float = isinstance(getattr(getattr(Config(), section), key), float)
    for bound in (declaration.low, declaration.high):  # the bounds themselves are allowed
        value = getattr(load_config(None, [f"{name}={bound}", *ROOM_FOR[name]]), section)
        assert getattr(value, key) == bound or (declaration.automatic and bound == AUTOMATIC)
    outside = [declaration.low - 1.0 if is_float else int(declaration.low) - 1]
    if declaration.high < 2**62:  # TOML integers stop at 2**63 - 1
        outside.append(declaration.high + 1.0 if is_float else int(declaration.high) + 1)
    for value in outside:
        allowed = re.escape(declaration.allowed())
        with pytest.raises(UserError, match=rf"^{name} = .* is out of range; allowed {allowed}$"):
            load_config(None, [f"{name}={value}"])


def test_memory_sizes_are_checked_against_their_range():
    assert load_config(None, []).spark.driver_memory == ""  # sized to the machine (`local_driver_memory`)
    assert load_config(None, ["spark.driver_memory=512m"]).spark.driver_memory == "512m"
    assert load_config(None, ["spark.driver_memory=64G"]).spark.driver_memory == "64G"
    for value in ("lots", "100m", "65g", "'2'"):
        with pytest.raises(UserError, match=r"spark.driver_memory = .* must be a JVM memory size from 512m to 64g"):
            load_config(None, [f"spark.driver_memory={value}"])


def test_choices_are_checked_and_every_declared_choice_is_accepted():
    for section, item, declaration in declared_settings():
        for choice in declaration.choices:
            load_config(None, [f"{section}.{item.name}={choice}"])
    with pytest.raises(UserError, match="corpus.unicode_normalization = 'NFX' is not allowed; choose one of NFC"):
        load_config(None, ["corpus.unicode_normalization=NFX"])
    with pytest.raises(UserError, match="spark.log_level = 'TRACE' is not allowed; choose one of ERROR, WARN, INFO"):
        load_config(None, ["spark.log_level=TRACE"])


def test_minibatch_larger_than_twelve_times_the_noise_pool_is_rejected():
    load_config(None, ["train.batch_pairs=1536", "train.noise_pool=128"])
    with pytest.raises(UserError, match="train.batch_pairs = 1537 is more than 12x train.noise_pool = 128"):
        load_config(None, ["train.batch_pairs=1537", "train.noise_pool=128"])


def test_automatic_rounds_are_resolved_once_at_load():
    # (2 x shards + 10 - one load - two warm-up stages) // (shards + 1) stages per round
    assert load_config(None, ["train.num_shards=2"]).train.rounds_per_epoch == 3
    assert load_config(None, ["train.num_shards=16"]).train.rounds_per_epoch == 2
    assert load_config(None, ["train.num_shards=1"]).train.rounds_per_epoch == 5
    assert load_config(None, ["train.num_shards=16", "train.rounds_per_epoch=3"]).train.rounds_per_epoch == 3


def test_unknown_key_is_rejected():
    with pytest.raises(UserError, match="unknown config key train.epoch;"):
        load_config(None, ["train.epoch=5"])


def test_unknown_section_is_rejected(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[trainer]\nepochs = 5\n")
    with pytest.raises(UserError, match=r"unknown config section \[trainer\]"):
        load_config(path)


def test_wrong_type_names_the_field():
    with pytest.raises(UserError, match="train.dim must be of type int"):
        load_config(None, ["train.dim=1.5"])
    with pytest.raises(UserError, match="corpus.lowercase must be of type bool"):
        load_config(None, ["corpus.lowercase=3"])


def test_pattern_and_name_are_checked():
    with pytest.raises(UserError, match="corpus.split_pattern .* is not a valid RE2 regex"):
        load_config(None, ["corpus.split_pattern='[unclosed'"])
    with pytest.raises(UserError, match="spark.app_name must not be empty"):
        load_config(None, ["spark.app_name=''"])


@pytest.mark.parametrize("master", ["nonsense", "local[0]", "local[x]", "local-cluster[2,1]", "spark://", "mesos://m:5050"])
def test_a_master_that_spark_would_not_parse_is_rejected(master):
    with pytest.raises(UserError, match=f"^spark.master = '{re.escape(master)}' is not a Spark master URL; use "):
        load_config(None, [f"spark.master='{master}'"])


@pytest.mark.parametrize("master", ["local", "local[2]", "local[*]", "local[2,4]", "local-cluster[2,1,1024]",
                                    "local-cluster[2, 1, 1024]",
                                    "spark://host:7077", "spark://a:7077,b:7077", "yarn", "k8s://https://h:443"])
def test_every_master_form_spark_takes_is_accepted(master):
    assert load_config(None, [f"spark.master='{master}'"]).spark.master == master


def test_malformed_override_and_missing_or_broken_file(tmp_path):
    with pytest.raises(UserError, match="must look like section.key=value"):
        load_config(None, ["epochs=5"])
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "absent.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[train\n")
    with pytest.raises(UserError, match="is not valid TOML"):
        load_config(broken)
    latin = tmp_path / "latin.toml"
    latin.write_bytes("[train]\n# d\xe9faut\n".encode("latin-1"))
    with pytest.raises(UserError, match="is not UTF-8 text; save it as UTF-8 TOML"):
        load_config(latin)
    with pytest.raises(UserError, match=r"cannot be read \(Is a directory\); pass a readable --config"):
        load_config(tmp_path)
