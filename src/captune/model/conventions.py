"""Where a caption starts and ends, in one place: the prompt ids decoding starts from and training puts
before a target, the token training targets end with and the tokens decoding stops on.

The published BLIP-2 OPT checkpoints end a caption with "\\n" (`text_config.eos_token_id` 50118, set by
transformers' conversion script as LAVIS trains and decodes them), while OPT's tokenizer says `</s>`.
Stopping on `</s>` alone lets every zero-shot system run past the first line to `max_new_tokens`.
"""

from __future__ import annotations

from typing import Any

from captune.errors import ModelError


def _ids(value: Any) -> list[int]:
    """An `eos_token_id` as configs store it (None, an int or a list) as a list."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value if v is not None]
    return [int(value)]


def caption_end_id(tokenizer, family: str) -> int:
    """The token a training target ends with: "\\n" for OPT (the checkpoints' own end token), `</s>` for T5."""
    if family != "opt":
        return int(tokenizer.eos_token_id)
    ids = tokenizer("\n", add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ModelError(f"the OPT tokenizer encodes '\\n' as {len(ids)} tokens ({ids}), not one; "
                         "captune needs a byte-level BPE vocabulary where '\\n' is a single token")
    return int(ids[0])


def prompt_ids(tokenizer, family: str, prompt: str) -> list[int]:
    """Where a caption starts: BOS + prompt for OPT, prompt + `</s>` (the encoder input) for T5. Decoding
    starts from these ids and training puts them before every target (`CaptionCollator`)."""
    prompt = prompt.strip()
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else []
    return [tokenizer.bos_token_id, *ids] if family == "opt" else [*ids, tokenizer.eos_token_id]


def end_token_ids(blip, tokenizer, family: str) -> list[int]:
    """Every token that ends a caption, first-named first: the text config's and generation configs' EOS,
    the tokenizer's EOS and the training targets' end (`caption_end_id`), so that zero-shot and fine-tuned
    systems stop where the checkpoint and captune's own training say a caption ends."""
    found: list[int] = []
    sources = [getattr(getattr(blip, "config", None), "text_config", None),
               getattr(getattr(blip, "language_model", None), "generation_config", None),
               getattr(blip, "generation_config", None)]
    for source in sources:
        found.extend(_ids(getattr(source, "eos_token_id", None)))
    found.extend(_ids(tokenizer.eos_token_id))
    found.append(caption_end_id(tokenizer, family))
    return list(dict.fromkeys(found))
