"""Train-time validation, beside the evaluation: greedy captions of the val images from the training
prompt, scored by BLEU-4 + CIDEr, the sum LAVIS selects the adapter by (train/loop.py keeps the best)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from captune.data.records import ImageRecord
from captune.decoding import Decoding


def validation_scores(captioner, records: Sequence[ImageRecord], image_embeds: Iterable[torch.Tensor],
                      prompt: str, max_new_tokens: int) -> dict[str, float]:
    """Caption the records (their vision features come batch by batch, in order) with the adapter on, and
    score each caption against the record's references."""
    from captune.metrics.coco import Bleu, Cider
    from captune.metrics.tokenize import tokenize_captions

    settings = Decoding(prompt=prompt, max_new_tokens=max_new_tokens)
    captions: list[str] = []
    for embeds in image_embeds:
        feats = captioner.lm_inputs(embeds, adapter=True)
        captions.extend(c[0] for c in captioner.generate_from_features(feats, settings, adapter=True))
    tokenized, _ = tokenize_captions(captions + [ref for r in records for ref in r.refs])
    res = {i: [tokenized[i]] for i in range(len(records))}
    gts, pos = {}, len(records)
    for i, r in enumerate(records):
        gts[i] = tokenized[pos:pos + len(r.refs)]
        pos += len(r.refs)
    bleu4 = Bleu(4).compute_score(gts, res)[0][3]
    cider = Cider().compute_score(gts, res)[0]
    return {"val_bleu4": bleu4, "val_cider": cider, "val_score": bleu4 + cider}
