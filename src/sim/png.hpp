// A minimal PNG encoder for the HTML report's heatmaps: 8-bit palette images, the image data in
// uncompressed (stored) deflate blocks, so no compression library is needed; the report embeds
// them as base64 data URIs. Heatmaps are at most a few hundred pixels a side.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace exflow::sim {

// pixels [height, width] palette indices; palette 256 RGB triples. Returns the PNG file bytes.
std::string encode_png(int width, int height, const std::vector<std::uint8_t>& pixels,
                       const std::array<std::uint8_t, 768>& palette);

// Standard base64 (RFC 4648) with padding.
std::string base64(const std::string& bytes);

}  // namespace exflow::sim
