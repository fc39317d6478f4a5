from pathlib import Path

import pytest

from sgns_spark.config import RANGES, Config, load_config
from sgns_spark.errors import UserError

DEFAULT_TOML = Path(__file__).resolve().parents[1] / "conf" / "default.toml"


def test_default_toml_documents_the_built_in_defaults():
    assert load_config(DEFAULT_TOML) == Config()


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


@pytest.mark.parametrize("name", sorted(RANGES))
def test_every_range_is_enforced_with_the_field_named(name):
    low, high = RANGES[name]
    section, key = name.split(".")
    is_float = isinstance(getattr(getattr(Config(), section), key), float)
    outside = [low - 1.0 if is_float else int(low) - 1]
    if high < 2**62:  # TOML integers stop at 2**63 - 1
        outside.append(high + 1.0 if is_float else int(high) + 1)
    for value in outside:
        with pytest.raises(UserError, match=rf"{name} = .* is out of range; allowed"):
            load_config(None, [f"{name}={value}"])


def test_minibatch_larger_than_twelve_times_the_noise_pool_is_rejected():
    load_config(None, ["train.batch_pairs=1536", "train.noise_pool=128"])
    with pytest.raises(UserError, match="train.batch_pairs = 1537 is more than 12x train.noise_pool = 128"):
        load_config(None, ["train.batch_pairs=1537", "train.noise_pool=128"])


def test_automatic_rounds_grow_with_the_shards():
    assert load_config(None, ["train.num_shards=2"]).train.rounds() == 4
    assert load_config(None, ["train.num_shards=16"]).train.rounds() == 32
    assert load_config(None, ["train.num_shards=16", "train.rounds_per_epoch=3"]).train.rounds() == 3


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


def test_choices_memory_and_pattern_are_checked():
    with pytest.raises(UserError, match="corpus.unicode_normalization = 'NFX'"):
        load_config(None, ["corpus.unicode_normalization=NFX"])
    with pytest.raises(UserError, match="spark.driver_memory"):
        load_config(None, ["spark.driver_memory=lots"])
    with pytest.raises(UserError, match="corpus.split_pattern .* is not a valid RE2 regex"):
        load_config(None, ["corpus.split_pattern='[unclosed'"])
    with pytest.raises(UserError, match="spark.app_name must not be empty"):
        load_config(None, ["spark.app_name=''"])


def test_malformed_override_and_missing_or_broken_file(tmp_path):
    with pytest.raises(UserError, match="must look like section.key=value"):
        load_config(None, ["epochs=5"])
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "absent.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[train\n")
    with pytest.raises(UserError, match="is not valid TOML"):
        load_config(broken)
