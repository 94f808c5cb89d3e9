"""Building blocks shared by the ViT and MobileViT models: pre-LN transformer block, MLP, stochastic depth."""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import conv_flop_count, FlopCounterMode, sdpa_flop_count

from .attention import Attention


def drop_path(x: Tensor, rate: float, training: bool) -> Tensor:
    """Stochastic depth (Huang et al. 2016): zero the residual branch of whole samples with probability
    `rate`, scaling the kept ones by 1/(1 - rate) so the expectation is unchanged."""
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


class DropPath(nn.Module):
    def __init__(self, rate: float = 0.0):
        super().__init__()
        self.rate = rate

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.rate, self.training)

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


def drop_path_rates(total: float, n: int) -> list[float]:
    """Per-block stochastic-depth rates rising linearly from 0 to `total` over n blocks."""
    if n <= 1:
        return [float(total)] * n
    return [total * i / (n - 1) for i in range(n)]


class Mlp(nn.Module):
    """Linear → activation → dropout → linear → dropout: the transformer FFN."""

    def __init__(self, dim: int, hidden: int, act: type[nn.Module] = nn.GELU, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = act()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class TransformerBlock(nn.Module):
    """Pre-LN transformer layer: x + DropPath(Attn(LN(x))), then x + DropPath(MLP(LN(x)))."""

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int, *, attn_norm: str = "softmax",
                 zscore_v: bool = False, dropout: float = 0.0, attn_dropout: float = 0.0,
                 drop_path: float = 0.0, act: type[nn.Module] = nn.GELU, norm_eps: float = 1e-5):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, attn_norm=attn_norm, attn_drop=attn_dropout,
                              proj_drop=dropout, zscore_v=zscore_v)
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, mlp_hidden, act=act, drop=dropout)
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))

    def forward_with_weights(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Like forward, also returning this layer's attention weights (B, H, N, N)."""
        a, w = self.attn(self.norm1(x), return_weights=True)
        x = x + self.drop_path1(a)
        return x + self.drop_path2(self.mlp(self.norm2(x))), w


def init_transformer_weights(module: nn.Module, std: float = 0.02) -> None:
    """Truncated-normal(std) linear weights with zero biases, unit LayerNorms (the ViT/timm convention)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def conv_backward_flops(grad_out_shape, x_shape, w_shape, *args, output_mask=(True, True), transposed=False,
                        **kwargs) -> int:
    """FLOPs of a convolution's backward: each requested gradient (input, weight) costs what the forward
    costs, 2 · N · C_out · (C_in / groups) · k² · output pixels. torch's own formula counts the weight
    gradient of a grouped convolution as if it were dense (C_in times too much for a depthwise one)."""
    forward = conv_flop_count(list(x_shape), list(w_shape), list(grad_out_shape), transposed=transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def flop_counter():
    """A FlopCounterMode that also counts the CPU flash-attention kernel behind
    `scaled_dot_product_attention` (torch registers formulas only for the CUDA kernels) and counts the
    backward of grouped (depthwise) convolutions right (`conv_backward_flops`)."""
    def cpu_sdpa(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    def conv_backward(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                      _output_padding, _groups, output_mask, out_shape=None, **kwargs):
        return conv_backward_flops(grad_out_shape, x_shape, w_shape, output_mask=output_mask, transposed=transposed)

    mapping = {torch.ops.aten.convolution_backward: conv_backward}
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None:
        mapping[op] = cpu_sdpa
    return FlopCounterMode(display=False, custom_mapping=mapping)


@torch.no_grad()
def count_flops(model: nn.Module, input_size: int, in_chans: int = 3) -> int:
    """Forward FLOPs for one image of input_size², counted by torch's FlopCounterMode.

    FlopCounterMode counts 2 FLOPs per multiply-accumulate of matmuls, convolutions and attention
    kernels (element-wise ops are not counted), so this is ≈ 2 × the "MACs" many papers quote.
    """
    was_training = model.training
    model.eval()
    p = next(model.parameters())
    x = torch.zeros(1, in_chans, input_size, input_size, device=p.device, dtype=p.dtype)
    try:
        with flop_counter() as counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


#: Columns of `vitlab models NAME --describe` (None where not applicable): stage, block, out (channels
#: or width), stride, map (feature map side), expansion, width (transformer width), depth, heads,
#: head_dim, ffn, tokens (per attention), params.
DESCRIBE_COLUMNS = ("stage", "block", "out", "stride", "map", "expansion", "width", "depth", "heads", "head_dim",
                    "ffn", "tokens", "params")


def describe_row(**values) -> dict:
    """One row of a model description: every DESCRIBE_COLUMNS entry, None where not given."""
    return {c: values.get(c) for c in DESCRIBE_COLUMNS}
