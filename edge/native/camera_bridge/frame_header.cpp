#include "frame_header.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <stdexcept>

namespace lineside {
namespace {

// Decode one UTF-8 code point starting at s[i]; advances i. Invalid bytes become U+FFFD,
// as Python would never produce them from a str (camera ids come from the command line).
std::uint32_t next_code_point(const std::string& s, std::size_t& i) {
    const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
    const unsigned char lead = byte(i);
    const int extra = lead < 0x80           ? 0
                      : (lead >> 5) == 0x6  ? 1
                      : (lead >> 4) == 0xE  ? 2
                      : (lead >> 3) == 0x1E ? 3
                                            : -1;
    if (extra < 0) {
        ++i;
        return 0xFFFD;
    }
    std::uint32_t cp = extra == 0 ? lead : lead & (0x3F >> extra);
    for (int k = 1; k <= extra; ++k) {
        if (i + k >= s.size() || (byte(i + k) >> 6) != 0x2) {
            ++i;
            return 0xFFFD;
        }
        cp = (cp << 6) | (byte(i + k) & 0x3F);
    }
    i += static_cast<std::size_t>(extra) + 1;
    return cp;
}

void append_u16(std::string& out, std::uint32_t unit) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "\\u%04x", unit);
    out += buf;
}

// Python's float repr: the shortest digits that round-trip, in fixed notation for
// decimal exponents -4..15 (always with a decimal point) and scientific otherwise.
std::string python_float(double value) {
    if (!std::isfinite(value)) throw std::invalid_argument("line_position must be finite");
    char buf[40];
    for (int precision = 0; precision <= 16; ++precision) {
        std::snprintf(buf, sizeof buf, "%.*e", precision, value);
        if (std::strtod(buf, nullptr) == value) break;
    }
    std::string text(buf);
    std::string sign;
    if (text[0] == '-') {
        sign = "-";
        text.erase(0, 1);
    }
    const auto e = text.find('e');
    const int exponent = std::atoi(text.c_str() + e + 1);
    std::string digits = text.substr(0, e);
    digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
    while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
    const int n = static_cast<int>(digits.size());
    std::string out;
    if (exponent >= -4 && exponent < 16) {
        if (exponent >= n - 1) {
            out = digits + std::string(exponent - (n - 1), '0') + ".0";
        } else if (exponent >= 0) {
            out = digits.substr(0, exponent + 1) + "." + digits.substr(exponent + 1);
        } else {
            out = "0." + std::string(-exponent - 1, '0') + digits;
        }
    } else {
        char exp_text[16];
        std::snprintf(exp_text, sizeof exp_text, "e%c%02d", exponent < 0 ? '-' : '+',
                      exponent < 0 ? -exponent : exponent);
        out = digits.substr(0, 1) + (n > 1 ? "." + digits.substr(1) : "") + exp_text;
    }
    return sign + out;
}

}  // namespace

std::string json_string(const std::string& utf8) {
    std::string out = "\"";
    for (std::size_t i = 0; i < utf8.size();) {
        const std::uint32_t cp = next_code_point(utf8, i);
        switch (cp) {
            case '"': out += "\\\""; continue;
            case '\\': out += "\\\\"; continue;
            case '\n': out += "\\n"; continue;
            case '\r': out += "\\r"; continue;
            case '\t': out += "\\t"; continue;
            case '\b': out += "\\b"; continue;
            case '\f': out += "\\f"; continue;
            default: break;
        }
        if (cp < 0x20 || (cp >= 0x7F && cp < 0x10000)) {
            append_u16(out, cp);
        } else if (cp >= 0x10000) {
            const std::uint32_t v = cp - 0x10000;
            append_u16(out, 0xD800 | (v >> 10));
            append_u16(out, 0xDC00 | (v & 0x3FF));
        } else {
            out += static_cast<char>(cp);
        }
    }
    return out + "\"";
}

std::string encode_header(const FrameHeader& h) {
    std::ostringstream json;
    json << "{\"schema\":" << kSchemaVersion << ",\"camera_id\":" << json_string(h.camera_id)
         << ",\"frame_id\":" << h.frame_id << ",\"timestamp_ns\":" << h.timestamp_ns
         << ",\"encoding\":" << json_string(h.encoding) << ",\"shape\":[";
    for (std::size_t k = 0; k < h.shape.size(); ++k) json << (k ? "," : "") << h.shape[k];
    json << "]";
    if (h.line_position) json << ",\"line_position\":" << python_float(*h.line_position);
    if (!h.stream_id.empty()) json << ",\"stream_id\":" << json_string(h.stream_id);
    json << "}";
    return json.str();
}

std::string encode_event(const std::string& kind, const std::string& camera_id,
                         const std::string& reason,
                         const std::vector<std::pair<std::string, std::uint64_t>>& counters) {
    std::ostringstream json;
    json << "{\"schema\":" << kSchemaVersion << ",\"kind\":" << json_string(kind)
         << ",\"source\":\"camera-bridge\",\"camera_id\":" << json_string(camera_id)
         << ",\"reason\":" << json_string(reason) << ",\"counters\":{";
    for (std::size_t k = 0; k < counters.size(); ++k) {
        json << (k ? "," : "") << json_string(counters[k].first) << ":" << counters[k].second;
    }
    json << "}}";
    return json.str();
}

}  // namespace lineside
