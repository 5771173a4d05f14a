"""LCF-X's spec (different contexts): its config, which layers it reads and writes, and the file name of
every parameter. No JAX here: the Flax half (`adapters/lcfx.py`), the exported format and the PyTorch half
all read these."""
from __future__ import annotations

import dataclasses
from typing import Optional

from lcf_jax.adapters.layer_map import select_layers
from lcf_jax.adapters.specs.base import (ONES, ZEROS, Param, Table, constant, lecun_normal, normal, param,
                                         table_from)
from lcf_jax.models.config import ACTIVATIONS, ModelConfig

KIND = "lcfx"
SHARED_CONTEXT = False   # the role (`adapters.interface`): fuse a shared context, or send a message
TORCH_HALF = "lcf_jax.torch.lcfx:LCFXAdapter"   # the PyTorch module that loads its exported files
# Fields a file must carry; the others take the dataclass defaults (older files lack them: a file without
# `injection` was written before the positioned message, one without `pooling` before window pooling).
REQUIRED_IN_FILE = ("rank", "slots", "conditioned", "pool_heads", "activation", "eps")
INJECTIONS = ("extra", "positioned")
DECODERS = ("kv", "embed")
POOLINGS = ("attention", "window")


@dataclasses.dataclass(frozen=True)
class LCFXConfig:
    rank: int = 256
    slots: int = 16
    conditioned: bool = False
    sharer_layers: Optional[tuple[int, ...]] = None     # sharer layers the encoder reads (None: all)
    receiver_layers: Optional[tuple[int, ...]] = None   # receiver layers given extra K/V (None: all)
    cond_layers: Optional[tuple[int, ...]] = None       # receiver layers summarised for conditioning (None: all)
    pool_heads: int = 4
    activation: str = "silu"
    eps: float = 1e-6
    key_init_std: float = 0.02
    value_gate_init: float = 0.0
    # A linear latent path (as in Multi-Head Latent Attention): no norm or activation between the
    # down-projection, the pooling's values and the up-projection, so a slot is exactly a convex
    # combination of translated tokens. What the closed-form latent alignment fits (train/latent_align.py).
    linear: bool = False
    # How the decoded message enters the receiver. "extra": position-free extra KV every query sees
    # (the first convention; its keys look to the receiver like keys at position 0). "positioned": a
    # prefix of the receiver's own cache, right after its special prefix (BOS): slot j sits at position
    # P + j, keys rotated there, and the prompt continues at P + m. A positioned prefix is an ordinary
    # cache, so sliding-window layers and a plain transformers cache treat the slots as tokens.
    injection: str = "extra"
    # What the receiver half decodes each slot into. "kv": per-layer keys and values (dec_wk/dec_wv).
    # "embed": one input vector per slot that the receiver prefills itself (its own layers then make
    # the K/V, as an ordinary token's); needs injection="positioned".
    decoder: str = "kv"
    embed_hidden: int = 1024   # width of the embed decoder's hidden layer
    # How the m slots are drawn from the sharer's tokens. "attention": m learned (optionally receiver-
    # conditioned) queries attend over every token (soft pooling). "window": a relevance score per token
    # picks the m consecutive tokens that hold the most score mass, and slot j is the translated token
    # start + j (hard attention: an excerpt of the passage, in order). Conditioned, the score reads what
    # the receiver asks (`locator_rank` is the width of its score space); unconditioned, it is a learned
    # per-token prior (z . w_b) that sees the passage alone, and untrained (w_b = 0) the excerpt is the
    # passage's first m tokens.
    pooling: str = "attention"
    locator_rank: int = 128
    # Embed decoder only: the receiver replaces each decoded vector by its nearest input embedding (cosine),
    # so every slot is exactly a vector the frozen receiver was trained on (its vocabulary as a codebook).
    snap: bool = False

    kind = "lcfx"

    def __post_init__(self):
        for name in ("sharer_layers", "receiver_layers", "cond_layers"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, tuple):
                object.__setattr__(self, name, tuple(int(x) for x in v))
        if self.rank <= 0 or self.slots <= 0:
            raise ValueError(f"LCFXConfig rank and slots must be positive, got rank={self.rank}, slots={self.slots}")
        if self.rank % self.pool_heads:
            raise ValueError(f"LCFXConfig.rank={self.rank} must be a multiple of pool_heads={self.pool_heads}")
        if self.linear and self.pool_heads != 1:
            raise ValueError("LCFXConfig.linear needs pool_heads=1: with several heads one slot would mix "
                             "different tokens' latent chunks")
        if self.injection not in INJECTIONS:
            raise ValueError(f"LCFXConfig.injection must be one of {INJECTIONS}, got {self.injection!r}")
        if self.decoder not in DECODERS:
            raise ValueError(f"LCFXConfig.decoder must be one of {DECODERS}, got {self.decoder!r}")
        if self.decoder == "embed" and self.injection != "positioned":
            raise ValueError("LCFXConfig.decoder='embed' needs injection='positioned': the receiver prefills "
                             "the decoded vectors as tokens of its own cache")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"LCFXConfig.activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"LCFXConfig.pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.pooling == "window" and self.linear:
            raise ValueError("LCFXConfig.pooling='window' has no linear variant (linear=False)")
        if self.snap and self.decoder != "embed":
            raise ValueError("LCFXConfig.snap needs decoder='embed' (it snaps decoded input vectors to the vocabulary)")
        if self.locator_rank <= 0:
            raise ValueError(f"LCFXConfig.locator_rank must be positive, got {self.locator_rank}")


CONFIG = LCFXConfig


def _resolve(sel, n: int, what: str) -> tuple[int, ...]:
    return select_layers(sel, n, f"LCFXConfig.{what}")


def decoded_layers(cfg: LCFXConfig, receiver_cfg: ModelConfig) -> tuple[int, ...]:
    """The receiver layers the kv decoder writes."""
    return _resolve(cfg.receiver_layers, receiver_cfg.num_layers, "receiver_layers")


def used_layers(cfg: LCFXConfig, sharer_cfg: ModelConfig, receiver_cfg: ModelConfig):
    """(sharer layers encoded, receiver layers decoded, receiver layers summarised for conditioning)."""
    return (_resolve(cfg.sharer_layers, sharer_cfg.num_layers, "sharer_layers"),
            decoded_layers(cfg, receiver_cfg),
            _resolve(cfg.cond_layers, receiver_cfg.num_layers, "cond_layers") if cfg.conditioned else ())


layer_plan = used_layers   # the kind-independent name `export_format.layer_plan` calls


def layer_layout(cfg: LCFXConfig, s: ModelConfig, r: ModelConfig) -> dict:
    """The "layer_map" section of adapter.json."""
    su, ru, cu = used_layers(cfg, s, r)
    return {"kind": "lcfx", "sharer_layers": list(su), "receiver_layers": list(ru), "cond_layers": list(cu)}


def param_layout(cfg: LCFXConfig, s: ModelConfig, r: ModelConfig) -> tuple[Param, ...]:
    """Every parameter (path, shape, logical axes, init), in the order the Flax init draws them (the
    conditioned locator's first, so a conditioned adapter's init stays what it was)."""
    su, ru, cu = used_layers(cfg, s, r)
    rk, m, kv = cfg.rank, cfg.slots, r.kv_width
    fan_in_sum, plain, stacked = lecun_normal((0, 1), 2), lecun_normal(-2, -1), lecun_normal(-2, -1, (0,))
    out = [param("enc_w", (len(su), 2 * s.kv_width, rk), ("sharer_layers", "kv_in", "rank"), fan_in_sum),
           param("enc_b", (rk,), ("rank",), ZEROS), param("enc_norm", (rk,), ("rank",), ONES)]
    if cfg.pooling == "attention":
        out += [param("queries", (m, rk), ("slots", "rank"), normal(1.0)),
                param("pool_wk", (rk, rk), ("rank_in", "rank"), plain)]
    else:
        if cfg.conditioned:
            out += [param("loc_wq", (rk, cfg.locator_rank), ("rank_in", "locator"), plain),
                    param("loc_wk", (rk, cfg.locator_rank), ("rank_in", "locator"), plain)]
        out.append(param("loc_wb", (rk,), ("rank",), ZEROS))
    out += [param("pool_wv", (rk, rk), ("rank_in", "rank"), plain), param("pool_wo", (rk, rk), ("rank_in", "rank"), plain),
            param("out_norm", (rk,), ("rank",), ONES)]
    if cfg.decoder == "kv":
        n = len(ru)
        out += [param("dec_norm", (n, rk), ("layers", "rank"), ONES),
                param("dec_wk", (n, rk, kv), ("layers", "rank", "kv_out"), normal(cfg.key_init_std)),
                param("dec_bk", (n, kv), ("layers", "kv_out"), ZEROS),
                param("dec_wv", (n, rk, kv), ("layers", "rank", "kv_out"), stacked),
                param("dec_bv", (n, kv), ("layers", "kv_out"), ZEROS),
                param("v_gate", (n,), ("layers",), constant(cfg.value_gate_init))]
    else:
        hid, dim = cfg.embed_hidden, r.hidden_size
        out += [param("dec_e_norm", (rk,), ("rank",), ONES), param("dec_e_w1", (rk, hid), ("rank_in", "mlp"), plain),
                param("dec_e_b1", (hid,), ("mlp",), ZEROS), param("dec_e_w2", (hid, dim), ("mlp", "embed"), plain),
                param("dec_e_b2", (dim,), ("embed",), ZEROS),
                # RMSNorm weight of the decoded vector; `calibrate_embed_decoder` sets it to the RMS of the
                # receiver's own input vectors, so slots start at the scale the first layer expects.
                param("dec_e_scale", (dim,), ("embed",), ONES)]
    if cfg.conditioned:
        out += [param("cond_w", (len(cu), 2 * kv, rk), ("receiver_layers", "kv_in", "rank"), fan_in_sum),
                param("cond_b", (rk,), ("rank",), ZEROS), param("cond_norm", (rk,), ("rank",), ONES)]
        if cfg.pooling == "attention":
            out.append(param("cond_shift", (rk, m, rk), ("rank_in", "slots", "rank"), ZEROS))
    return tuple(out)


def tensor_table(cfg: LCFXConfig, s: ModelConfig, r: ModelConfig) -> Table:
    """The file name of every parameter (see `export_format`); shapes come from `param_layout`."""
    su, ru, cu = used_layers(cfg, s, r)
    window = cfg.pooling == "window"
    e = [(f"encoder.in_proj.{sl}.weight", ("enc_w",), (j,), "linear") for j, sl in enumerate(su)]
    e += [("encoder.in_proj_bias", ("enc_b",), (), "copy"), ("encoder.norm.weight", ("enc_norm",), (), "copy")]
    if window and cfg.conditioned:
        e += [("encoder.locator_q.weight", ("loc_wq",), (), "linear"),
              ("encoder.locator_k.weight", ("loc_wk",), (), "linear")]
    if window:
        e.append(("encoder.locator_bias.weight", ("loc_wb",), (), "copy"))
    else:
        e += [("encoder.queries", ("queries",), (), "copy"), ("encoder.pool_k.weight", ("pool_wk",), (), "linear")]
    e += [("encoder.pool_v.weight", ("pool_wv",), (), "linear"), ("encoder.pool_o.weight", ("pool_wo",), (), "linear"),
          ("encoder.out_norm.weight", ("out_norm",), (), "copy")]
    if cfg.conditioned:
        e += [(f"encoder.cond_proj.{l}.weight", ("cond_w",), (j,), "linear") for j, l in enumerate(cu)]
        e += [("encoder.cond_bias", ("cond_b",), (), "copy"), ("encoder.cond_norm.weight", ("cond_norm",), (), "copy")]
        if not window:
            e.append(("encoder.cond_shift.weight", ("cond_shift",), (), "shift"))
    if cfg.decoder == "embed":
        e += [(f"decoder.embed.{name}", (leaf,), (), t) for name, leaf, t in (
            ("norm.weight", "dec_e_norm", "copy"), ("w1.weight", "dec_e_w1", "linear"), ("w1.bias", "dec_e_b1", "copy"),
            ("w2.weight", "dec_e_w2", "linear"), ("w2.bias", "dec_e_b2", "copy"), ("scale.weight", "dec_e_scale", "copy"))]
    else:
        for j, l in enumerate(ru):
            e += [(f"decoder.layers.{l}.{name}", (leaf,), (j,), t) for name, leaf, t in (
                ("norm.weight", "dec_norm", "copy"), ("k.weight", "dec_wk", "linear"), ("k.bias", "dec_bk", "copy"),
                ("v.weight", "dec_wv", "linear"), ("v.bias", "dec_bv", "copy"), ("v_gate", "v_gate", "copy"))]
    return table_from(param_layout(cfg, s, r), e)
