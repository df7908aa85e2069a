from pathlib import Path

import pytest
import yaml

from captune.config import RunConfig, config_from_dict, dump_config, load_config, read_yaml
from captune.errors import ConfigError


def test_defaults_are_valid_and_round_trip(tmp_path: Path) -> None:
    cfg = load_config()
    assert isinstance(cfg, RunConfig)
    out = tmp_path / "config.yaml"
    dump_config(cfg, out)
    again = load_config(out)
    assert again == cfg


def test_misspelt_key_names_path_and_nearest(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  lerning_rate: 1e-4\n  batch_sise: 4\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert "train.batch_sise" in msg or "train.lerning_rate" in msg
    path.write_text("train:\n  batch_sise: 4\n")
    with pytest.raises(ConfigError, match=r"train\.batch_sise.*did you mean 'train\.batch_size'"):
        load_config(path)


def test_unknown_section_suggests_nearest() -> None:
    with pytest.raises(ConfigError, match="did you mean 'generate'"):
        config_from_dict({"generat": {}})


def test_wrong_type_names_expected_type() -> None:
    with pytest.raises(ConfigError, match=r"train\.batch_size.*expected int"):
        config_from_dict({"train": {"batch_size": "big"}})
    with pytest.raises(ConfigError, match=r"model\.dtype.*'fp32', 'bf16', 'fp16'"):
        config_from_dict({"model": {"dtype": "float64"}})


def test_literal_typo_suggests_value() -> None:
    with pytest.raises(ConfigError, match="did you mean 'qformer\\+lm'"):
        config_from_dict({"lora": {"preset": "qformer+lmm"}})


def test_overrides_and_yaml_numbers(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  lr: 1e-4\n")
    cfg = load_config(path, ["train.lr=3e-4", "train.max_steps=10", "generate.prompt=a photo of",
                             "eval.metrics=[coco, rouge]", "data.max_images=null"])
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.train.max_steps == 10
    assert cfg.generate.prompt == "a photo of"
    assert cfg.eval.metrics == ["coco", "rouge"]
    assert cfg.data.max_images is None


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.batch_size=0", "train.batch_size"),
        ("train.lr=-1", "train.lr"),
        ("train.lr=1000", "train.lr"),
        ("lora.r=0", "lora.r"),
        ("lora.dropout=1.5", "lora.dropout"),
        ("generate.top_p=0", "generate.top_p"),
        ("generate.max_new_tokens=-3", "generate.max_new_tokens"),
    ],
)
def test_absurd_values_name_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])


def test_bad_override_syntax() -> None:
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(None, ["train.lr"])


def test_fp16_refused_for_t5() -> None:
    with pytest.raises(ConfigError, match="bf16"):
        config_from_dict({"model": {"family": "t5", "dtype": "fp16"}})


def test_systems_parse_and_need_unique_names() -> None:
    cfg = config_from_dict({"eval": {"systems": [{"name": "a", "num_beams": 3}, {"name": "b", "adapter": True}]}})
    assert cfg.eval.systems[0].decode.num_beams == 3 and cfg.eval.systems[1].adapter
    with pytest.raises(ConfigError, match=r"eval\.systems\[1\]\.name"):
        config_from_dict({"eval": {"systems": [{"name": "a"}, {"name": "a"}]}})
    with pytest.raises(ConfigError, match=r"eval\.systems\[0\]\.num_beam"):
        config_from_dict({"eval": {"systems": [{"name": "a", "num_beam": 3}]}})


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  lr: [1e-4\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: malformed YAML at line"):
        read_yaml(path)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


def test_non_mapping_top_level(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path)


def test_yaml_off_is_the_word_not_false(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  feature_cache: off\n")
    assert load_config(path).train.feature_cache == "off"
    assert load_config(None, ["train.feature_cache=off"]).train.feature_cache == "off"


def test_shipped_configs_are_valid() -> None:
    from captune.model.presets import known_name

    root = Path(__file__).resolve().parents[1] / "configs"
    files = sorted(root.glob("*.yaml"))
    assert {f.name for f in files} >= {"flickr8k-blip2-opt-2.7b.yaml", "flickr8k-blip2-flan-t5-xl.yaml",
                                       "coco-karpathy-blip2-opt-2.7b.yaml"}
    for f in files:
        cfg = load_config(f)
        if f.name == "demo.yaml":  # the demo's recipe fills in its cached base and data (tests/test_demo.py)
            continue
        assert known_name(cfg.model.name_or_path), f
        assert cfg.lora.preset == "qformer+lm"
