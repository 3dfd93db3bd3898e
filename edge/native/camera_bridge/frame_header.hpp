// Frame header encoding for the lineside wire protocol (docs/protocol.md), byte for byte
// what the Python client library (lineside.edge.protocol.encode_header) produces:
// compact JSON, keys in protocol order, non-ASCII escaped as \uXXXX.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace lineside {

constexpr int kSchemaVersion = 1;

struct FrameHeader {
    std::string camera_id;
    std::uint64_t frame_id = 0;
    std::uint64_t timestamp_ns = 0;
    std::string encoding = "mono8";  // mono8 | bgr8 | jpeg | png
    std::vector<int> shape;          // {height, width} or {height, width, 3}
    std::optional<double> line_position;
    std::string stream_id;  // "" = none; changes when the frame count starts again
};

// JSON string literal (with quotes) as Python's json.dumps(ensure_ascii=True) writes it.
std::string json_string(const std::string& utf8);

// The header part of a frame message.
std::string encode_header(const FrameHeader& header);

// An `event` body (second part of a message on the events PUB socket).
std::string encode_event(const std::string& kind, const std::string& camera_id,
                         const std::string& reason,
                         const std::vector<std::pair<std::string, std::uint64_t>>& counters);

}  // namespace lineside
