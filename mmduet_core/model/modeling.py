"""MMDuet: LLaVA-OneVision plus two heads and a streaming frame encoder.

"VideoLLM Knows When to Speak: Enhancing Time-Sensitive Video Comprehension with Video-Text Duet Interaction
Format" (Wang et al., arXiv 2411.17991). Everything not written here is transformers'
`LlavaOnevisionForConditionalGeneration`: the SigLIP vision tower, the 2-layer GELU projector, the Qwen2
language model and `lm_head`. MMDuet adds

* `encode_frames`: each frame becomes a fixed number of embeddings (49 for the 7B model: the 27 x 27 patch
  grid, projected, then bilinearly resized to ceil(27 / 4) = 7 per side), upstream's video path;
* frames placed as consecutive embeddings in the text, one `<image>` placeholder per embedding;
* `informative_head` ("should I speak now?") and `relevance_head` ("is this frame relevant to the query?"),
  two linear maps hidden -> 2 read from the final hidden states, and their loss (upstream bug B1 fixed: the
  head labels really reach the loss).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration
from transformers.cache_utils import Cache
from transformers.utils import ModelOutput

from ..errors import InputError

IGNORE_INDEX = -100


@dataclass
class DuetOutput(ModelOutput):
    """What `DuetModel.forward` returns. Logits are float32; head logits have 2 classes, index 1 positive."""

    loss: torch.Tensor | None = None
    lm_loss: torch.Tensor | None = None
    video_loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (B, T_kept, V)
    informative_logits: torch.Tensor | None = None  # (B, T, 2)
    relevance_logits: torch.Tensor | None = None  # (B, T, 2)
    cache: Cache | None = None
    last_hidden_state: torch.Tensor | None = None  # (B, T, D), after the final norm


def positive_probability(head_logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the 2 head classes, probability of class 1. (..., 2) -> (...)."""
    return head_logits.float().softmax(-1)[..., 1]


class DuetModel(LlavaOnevisionForConditionalGeneration):
    """LLaVA-OneVision with MMDuet's frame encoder and informative / relevance heads.

    Duet settings live on the config as plain attributes (so a base checkpoint's config loads unchanged):
    `frame_pooling_stride` (4), `frame_pooling_mode` ("bilinear"), `lm_loss_weight` and `video_loss_weight` (1).
    """

    config_class = LlavaOnevisionConfig

    def __init__(self, config: LlavaOnevisionConfig):
        super().__init__(config)
        hidden = config.text_config.hidden_size
        self.informative_head = nn.Linear(hidden, 2, bias=False)
        self.relevance_head = nn.Linear(hidden, 2, bias=False)
        std = getattr(config.text_config, "initializer_range", 0.02)
        for head in (self.informative_head, self.relevance_head):
            nn.init.normal_(head.weight, std=std)

    # ---- frames -------------------------------------------------------------------------------------------

    @property
    def frame_grid_side(self) -> int:
        vision = self.config.vision_config
        return vision.image_size // vision.patch_size

    @property
    def frame_num_tokens(self) -> int:
        """Embeddings per frame: ceil(side / stride)^2 for bilinear (49 for 27 / 4), floor for average/max."""
        side, stride = self.frame_grid_side, getattr(self.config, "frame_pooling_stride", 4)
        mode = getattr(self.config, "frame_pooling_mode", "bilinear")
        pooled = math.ceil(side / stride) if mode == "bilinear" else side // stride
        return pooled * pooled

    def pool_frame_grid(self, features: torch.Tensor) -> torch.Tensor:
        """(F, side*side, D) patch features -> (F, frame_num_tokens, D), upstream's post-projector pooling."""
        frames, _, dim = features.shape
        side = self.frame_grid_side
        stride = getattr(self.config, "frame_pooling_stride", 4)
        mode = getattr(self.config, "frame_pooling_mode", "bilinear")
        grid = features.view(frames, side, side, dim).permute(0, 3, 1, 2)  # (F, D, side, side)
        if mode == "bilinear":
            out_side = math.ceil(side / stride)
            grid = F.interpolate(grid, size=(out_side, out_side), mode="bilinear", align_corners=False)
        elif mode == "average":
            grid = F.avg_pool2d(grid, stride)
        elif mode == "max":
            grid = F.max_pool2d(grid, stride)
        else:
            raise InputError(f"config frame_pooling_mode {mode!r}: use bilinear, average or max")
        return grid.flatten(2).transpose(1, 2)  # (F, side' * side', D), row-major over the grid

    def encode_frames(self, frames: torch.Tensor, chunk_size: int = 32) -> torch.Tensor:
        """uint8 frames (F, 3, R, R) -> frame embeddings (F, frame_num_tokens, D), in chunks of `chunk_size`.

        Pixels are mapped to u8 / 127.5 - 1 (SigLIP's mean 0.5 / std 0.5); the feature is the output of the
        vision encoder layer `vision_feature_layer` before `post_layernorm`, as upstream.
        """
        tower, projector = self.model.vision_tower, self.model.multi_modal_projector
        dtype = tower.dtype
        out = []
        for start in range(0, frames.shape[0], chunk_size):
            chunk = frames[start:start + chunk_size].to(tower.device)
            pixels = chunk.to(dtype) / 127.5 - 1.0 if chunk.dtype == torch.uint8 else chunk.to(dtype)
            hidden = tower(pixels, output_hidden_states=True).hidden_states[self.config.vision_feature_layer]
            out.append(self.pool_frame_grid(projector(hidden)))  # (f, 49, D)
        return torch.cat(out)

    def frame_embeddings(self, frames: torch.Tensor, chunk_size: int = 32) -> torch.Tensor:
        """uint8 pixels (F, 3, R, R) are encoded; float embeddings (F, n, D) pass through; anything else is an
        error naming the shape."""
        hidden = self.config.text_config.hidden_size
        if not isinstance(frames, torch.Tensor):
            raise InputError(f"frames must be a torch tensor (uint8 pixels or embeddings), got {type(frames).__name__}")
        got = f"{str(frames.dtype).removeprefix('torch.')} {tuple(frames.shape)}"
        if frames.dim() in (3, 4) and frames.shape[0] == 0:
            raise InputError(f"frames: an empty tensor ({got}); pass at least one frame")
        if frames.dim() == 4 and frames.dtype == torch.uint8 and frames.shape[1] == 3:
            with torch.no_grad():
                return self.encode_frames(frames, chunk_size)
        if frames.dim() == 4 and frames.is_floating_point():
            raise InputError(f"frames: float pixels ({got}); pass uint8 pixels 0-255 (F, 3, R, R) as read_video "
                             "returns them (they are normalised here), or frame embeddings (F, n, D)")
        if frames.dim() != 3 or frames.shape[-1] != hidden or not frames.is_floating_point():
            raise InputError(f"frames must be uint8 pixels (F, 3, R, R) or float embeddings (F, n, {hidden}), "
                             f"got {got}")
        return frames

    def embed_inputs(self, input_ids: torch.Tensor, frame_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings with every `<image>` position overwritten, in order, by the frame embeddings.

        input_ids (B, T); frame_embeds (F, n, D) or (F*n, D) with F*n == number of `<image>` ids.
        """
        embed = self.get_input_embeddings()
        image_id = self.config.image_token_id
        embeds = embed(input_ids.clamp(max=embed.num_embeddings - 1))  # (B, T, D)
        mask = input_ids == image_id
        if frame_embeds is None:
            if mask.any():
                raise ValueError("input has <image> placeholders but no frames were given")
            return embeds
        flat = frame_embeds.reshape(-1, embeds.shape[-1]).to(embeds.dtype)
        if flat.shape[0] != int(mask.sum()):
            raise ValueError(f"{int(mask.sum())} <image> placeholders but {flat.shape[0]} frame embeddings")
        return embeds.masked_scatter(mask.unsqueeze(-1), flat)

    # ---- forward ------------------------------------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        frames: torch.Tensor | None = None,
        frame_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        informative_labels: torch.LongTensor | None = None,
        relevance_labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        return_dict: bool | None = None,
        **kwargs,
    ) -> DuetOutput | tuple:
        """Text with frames in, LM logits and both heads' logits out; losses when labels are given.

        `labels` are already shifted (position t predicts token t+1), as upstream's collator makes them.
        `logits_to_keep=k` computes LM logits for the last k positions only (0 = all).
        """
        if inputs_embeds is None:
            if frame_embeds is None and frames is not None:
                frame_embeds = self.encode_frames(frames)
            inputs_embeds = self.embed_inputs(input_ids, frame_embeds)
        out = self.model.language_model(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
            cache=cache, use_cache=use_cache, **kwargs,
        )
        hidden = out.last_hidden_state  # (B, T, D)
        kept = hidden[:, -logits_to_keep:] if logits_to_keep else hidden
        logits = self.lm_head(kept).float()  # (B, T_kept, V)
        informative_logits = self.informative_head(hidden).float()  # (B, T, 2)
        relevance_logits = self.relevance_head(hidden).float()  # (B, T, 2)

        loss = lm_loss = video_loss = None
        if labels is not None:
            lm_loss = self._lm_loss(logits, labels, input_ids)
            loss = getattr(self.config, "lm_loss_weight", 1.0) * lm_loss
        if informative_labels is not None and relevance_labels is not None:
            video_loss = self._video_loss(informative_logits, relevance_logits, informative_labels, relevance_labels)
            weighted = getattr(self.config, "video_loss_weight", 1.0) * video_loss
            loss = weighted if loss is None else loss + weighted

        result = DuetOutput(loss=loss, lm_loss=lm_loss, video_loss=video_loss, logits=logits,
                            informative_logits=informative_logits, relevance_logits=relevance_logits,
                            cache=out.cache, last_hidden_state=hidden)
        if return_dict is False:  # the Trainer's convention: a tuple starting with the loss
            return result.to_tuple()
        return result

    @staticmethod
    def _lm_loss(logits: torch.Tensor, labels: torch.Tensor, input_ids: torch.Tensor | None) -> torch.Tensor:
        if not (labels != IGNORE_INDEX).any() and input_ids is not None and input_ids.shape[1] > 1:
            # Upstream (B11, kept): a batch without LM targets trains position 0 on the next token, so the
            # loss stays connected to the graph (DeepSpeed hangs on a graph without it).
            labels = labels.clone()
            labels[:, 0] = input_ids[:, 1]
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten().to(logits.device), ignore_index=IGNORE_INDEX)

    @staticmethod
    def _video_loss(informative_logits, relevance_logits, informative_labels, relevance_labels) -> torch.Tensor:
        # One mean over the labelled positions of both heads together (pooled, not averaged per head).
        logits = torch.cat([informative_logits, relevance_logits])  # (2B, T, 2)
        labels = torch.cat([informative_labels, relevance_labels]).to(logits.device)  # (2B, T)
        if not (labels != IGNORE_INDEX).any():
            labels = labels.clone()
            labels[:, 0] = 0  # upstream's forced target on unlabelled batches (B11, kept)
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)
