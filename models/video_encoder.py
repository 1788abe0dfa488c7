"""Videos -> tokens: every frame through an image encoder, pooled to a small grid, with its time."""
import torch.nn.functional as F
from torch import nn

from models.positions import coordinate_codes


class VideoEncoder(nn.Module):
    """B x F x 3 x S x S frames and B x F frame times (fractions of the clip) -> B x (F*g*g) tokens,
    no mask (all attended) and the positions the tokens include.

    The frame encoder is the model's image encoder unless the video gets its own, so
    weights are shared by default. Each frame's feature map is average-pooled to
    ``grid`` x ``grid`` cells before the projection, which keeps the token count of a
    clip near that of one image. A frame's tokens carry the image encoder's 2-D
    positions of their cell plus the code of the frame's time, the same code the
    time tokens start from, so a span's time tokens can be read out of the frames.
    """

    def __init__(self, frame_encoder, grid):
        super().__init__()
        self.frames = frame_encoder
        self.grid = grid

    def forward(self, frames, times):
        b, f = frames.shape[:2]
        features = self.frames.features(frames.flatten(0, 1))
        pooled = F.adaptive_avg_pool2d(features, self.grid)
        tokens, cells = self.frames.grid_tokens(pooled)  # (B*F) x g*g x dim, g*g x dim
        time_codes = coordinate_codes(times.flatten(), tokens.size(-1)).to(tokens)[:, None, :]
        tokens, positions = tokens + time_codes, cells + time_codes
        return tokens.view(b, f * tokens.size(1), -1), None, positions.view(b, f * tokens.size(1), -1)
