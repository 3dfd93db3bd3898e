// edge-camera-bridge: GigE Vision / GenICam camera (Aravis 0.8) onto lineside's ZeroMQ
// frame stream (docs/protocol.md). Each completed buffer becomes one two-part message
// (JSON header, pixels); the pixels are handed to ZeroMQ without a copy and the Aravis
// buffer returns to the stream once ZeroMQ has sent it. Incomplete or lost buffers and
// camera disconnects/reconnects become `event` messages on a separate PUB socket; a
// corrupt buffer is never published as a frame.
#include <arv.h>
#include <zmq.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "frame_header.hpp"

namespace {

std::atomic<bool> g_stop{false};
std::atomic<bool> g_control_lost{false};

void on_signal(int) { g_stop = true; }

struct Options {
    std::string camera;  // name, serial or IP address; empty = first camera found
    std::string endpoint = "tcp://127.0.0.1:5555";
    std::string mode = "push";  // push | pub
    std::string events;         // PUB endpoint for events ("" = stderr only)
    std::string camera_id = "cam0";
    std::string pixel_format = "Mono8";
    std::string trigger;  // "" = free run, else a trigger source (Line1, Software...)
    int hwm = 100;
    int roi[4] = {-1, -1, -1, -1};
    double exposure_us = -1, gain = -1, frame_rate = -1;
    long count = 0;  // stop after this many frames (0 = run until a signal)
    int buffers = 16;
};

const char* kHelp =
    "edge-camera-bridge: a GigE Vision camera onto lineside's ZeroMQ frame stream.\n\n"
    "usage: edge-camera-bridge [options]\n"
    "  --camera NAME|SERIAL|IP   camera to open (default: the first one found)\n"
    "  --endpoint ENDPOINT       where frames go (default tcp://127.0.0.1:5555)\n"
    "  --mode push|pub           PUSH (backpressure, default) or PUB\n"
    "  --hwm N                   ZeroMQ send high-water mark in messages (default 100)\n"
    "  --events ENDPOINT         PUB socket for event messages (bind), e.g.\n"
    "                            tcp://127.0.0.1:5560\n"
    "  --camera-id ID            camera_id in frame headers (default cam0)\n"
    "  --roi X,Y,W,H             region of interest\n"
    "  --pixel-format FORMAT     Mono8 (default)\n"
    "  --exposure US             exposure time in microseconds\n"
    "  --gain DB                 gain\n"
    "  --frame-rate HZ           acquisition frame rate (free run)\n"
    "  --trigger SOURCE          trigger mode with this source (Line1, Software, ...)\n"
    "  --count N                 stop after N frames (default: until SIGINT/SIGTERM)\n"
    "  --buffers N               stream buffers (default 16)\n\n"
    "examples:\n"
    "  edge-camera-bridge --camera 192.168.1.20 --roi 0,0,1600,256 --frame-rate 150\n"
    "  edge-camera-bridge --camera 127.0.0.1 --events tcp://127.0.0.1:5560 --count 100\n";

bool parse(int argc, char** argv, Options& o) {
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) throw std::runtime_error(a + " needs a value");
            return argv[++i];
        };
        if (a == "--help" || a == "-h") {
            std::fputs(kHelp, stdout);
            std::exit(0);
        } else if (a == "--camera") o.camera = value();
        else if (a == "--endpoint") o.endpoint = value();
        else if (a == "--mode") o.mode = value();
        else if (a == "--events") o.events = value();
        else if (a == "--camera-id") o.camera_id = value();
        else if (a == "--pixel-format") o.pixel_format = value();
        else if (a == "--trigger") o.trigger = value();
        else if (a == "--hwm") o.hwm = std::stoi(value());
        else if (a == "--exposure") o.exposure_us = std::stod(value());
        else if (a == "--gain") o.gain = std::stod(value());
        else if (a == "--frame-rate") o.frame_rate = std::stod(value());
        else if (a == "--count") o.count = std::stol(value());
        else if (a == "--buffers") o.buffers = std::stoi(value());
        else if (a == "--roi") {
            if (std::sscanf(value().c_str(), "%d,%d,%d,%d", &o.roi[0], &o.roi[1], &o.roi[2],
                            &o.roi[3]) != 4)
                throw std::runtime_error("--roi needs X,Y,W,H");
        } else {
            throw std::runtime_error("unknown option " + a + " (see --help)");
        }
    }
    if (o.mode != "push" && o.mode != "pub") throw std::runtime_error("--mode push|pub");
    if (o.pixel_format != "Mono8")
        throw std::runtime_error("only Mono8 is supported so far (Bayer/BGR later)");
    return true;
}

// Buffers whose bytes ZeroMQ has finished with, to be given back to the stream by the
// acquisition thread (Aravis streams are not to be touched from ZeroMQ's I/O thread).
struct ReturnQueue {
    std::mutex lock;
    std::vector<ArvBuffer*> buffers;
};

struct SentBuffer {
    ArvBuffer* buffer;
    ReturnQueue* queue;
};

void release_buffer(void*, void* hint) {
    auto* sent = static_cast<SentBuffer*>(hint);
    {
        std::lock_guard<std::mutex> guard(sent->queue->lock);
        sent->queue->buffers.push_back(sent->buffer);
    }
    delete sent;
}

struct Counters {
    std::uint64_t sent = 0, incomplete = 0, timeouts = 0, lost = 0, disconnects = 0,
                  reconnects = 0, send_failures = 0;
    std::vector<std::pair<std::string, std::uint64_t>> list() const {
        return {{"sent", sent},           {"incomplete", incomplete},
                {"timeouts", timeouts},   {"lost", lost},
                {"disconnects", disconnects}, {"reconnects", reconnects},
                {"send_failures", send_failures}};
    }
};

class Events {
   public:
    Events(void* context, const std::string& endpoint, std::string camera_id)
        : camera_id_(std::move(camera_id)) {
        if (endpoint.empty()) return;
        socket_ = zmq_socket(context, ZMQ_PUB);
        int linger = 2000;
        zmq_setsockopt(socket_, ZMQ_LINGER, &linger, sizeof linger);
        if (zmq_bind(socket_, endpoint.c_str()) != 0)
            throw std::runtime_error("cannot bind events " + endpoint + ": " +
                                     zmq_strerror(zmq_errno()));
    }
    ~Events() { close(); }
    void close() {
        if (socket_) zmq_close(socket_);
        socket_ = nullptr;
    }
    void emit(const std::string& kind, const std::string& reason, const Counters& counters) {
        const std::string body = lineside::encode_event(kind, camera_id_, reason,
                                                        counters.list());
        std::fprintf(stderr, "edge-camera-bridge: %s: %s\n", kind.c_str(), reason.c_str());
        if (!socket_) return;
        zmq_send(socket_, "event", 5, ZMQ_SNDMORE);
        zmq_send(socket_, body.data(), body.size(), 0);
    }

   private:
    void* socket_ = nullptr;
    std::string camera_id_;
};

void check(GError* error, const char* what) {
    if (error) {
        std::string message = std::string(what) + ": " + error->message;
        g_clear_error(&error);
        throw std::runtime_error(message);
    }
}

void on_control_lost(ArvDevice*, gpointer) { g_control_lost = true; }

struct Camera {
    ArvCamera* camera = nullptr;
    ArvStream* stream = nullptr;
    guint payload = 0;

    ~Camera() { close(); }

    void open(const Options& o) {
        GError* error = nullptr;
        camera = arv_camera_new(o.camera.empty() ? nullptr : o.camera.c_str(), &error);
        check(error, "open camera");
        g_control_lost = false;
        g_signal_connect(arv_camera_get_device(camera), "control-lost",
                         G_CALLBACK(on_control_lost), nullptr);
        arv_camera_set_pixel_format_from_string(camera, o.pixel_format.c_str(), &error);
        check(error, "pixel format");
        if (o.roi[2] > 0) {
            arv_camera_set_region(camera, o.roi[0], o.roi[1], o.roi[2], o.roi[3], &error);
            check(error, "region of interest");
        }
        if (o.exposure_us > 0) {
            arv_camera_set_exposure_time(camera, o.exposure_us, &error);
            check(error, "exposure");
        }
        if (o.gain >= 0) {
            arv_camera_set_gain(camera, o.gain, &error);
            check(error, "gain");
        }
        if (!o.trigger.empty()) {
            arv_camera_set_trigger(camera, o.trigger.c_str(), &error);
            check(error, "trigger");
        } else if (o.frame_rate > 0) {
            arv_camera_set_frame_rate(camera, o.frame_rate, &error);
            check(error, "frame rate");
        }
        arv_camera_set_acquisition_mode(camera, ARV_ACQUISITION_MODE_CONTINUOUS, &error);
        check(error, "acquisition mode");
        payload = arv_camera_get_payload(camera, &error);
        check(error, "payload size");
        stream = arv_camera_create_stream(camera, nullptr, nullptr, &error);
        check(error, "create stream");
        for (int i = 0; i < o.buffers; ++i)
            arv_stream_push_buffer(stream, arv_buffer_new_allocate(payload));
        arv_camera_start_acquisition(camera, &error);
        check(error, "start acquisition");
    }

    void close() {
        if (camera) {
            GError* error = nullptr;
            arv_camera_stop_acquisition(camera, &error);
            g_clear_error(&error);
        }
        // Buffers still inside ZeroMQ keep their memory alive: the stream owns the
        // queued ones; ours were allocated by the stream's buffers and freed with it
        // only after ZeroMQ released them (the context is closed first, see main).
        if (stream) g_clear_object(&stream);
        if (camera) g_clear_object(&camera);
    }
};

std::uint64_t now_ns() {
    return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                          std::chrono::system_clock::now().time_since_epoch())
                                          .count());
}

}  // namespace

int main(int argc, char** argv) {
    Options options;
    try {
        parse(argc, argv, options);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "edge-camera-bridge: %s\n", e.what());
        return 2;
    }
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);

    void* context = zmq_ctx_new();
    void* frames = zmq_socket(context, options.mode == "pub" ? ZMQ_PUB : ZMQ_PUSH);
    zmq_setsockopt(frames, ZMQ_SNDHWM, &options.hwm, sizeof options.hwm);
    int linger = 5000;
    zmq_setsockopt(frames, ZMQ_LINGER, &linger, sizeof linger);
    // PUSH connects to the daemon's bound PULL; PUB binds for SUB daemons to connect.
    const int rc = options.mode == "pub" ? zmq_bind(frames, options.endpoint.c_str())
                                         : zmq_connect(frames, options.endpoint.c_str());
    if (rc != 0) {
        std::fprintf(stderr, "edge-camera-bridge: %s: %s\n", options.endpoint.c_str(),
                     zmq_strerror(zmq_errno()));
        return 2;
    }

    Counters counters;
    {
        Events events(context, options.events, options.camera_id);
        ReturnQueue returns;
        Camera camera;
        // Frame ids are the camera's own block ids, so a buffer lost between camera and
        // bridge (or an incomplete one, never published) is a gap the daemon reports as a
        // drop (camera setting report_gaps); each camera open starts a new stream id,
        // because the camera's count may start again after a reconnect.
        const std::string boot = std::to_string(now_ns());
        std::uint64_t opens = 0;
        std::string stream_id;
        std::uint64_t last_camera_frame = 0;
        bool have_camera_frame = false;
        bool connected = false;
        auto last_report = std::chrono::steady_clock::now();
        while (!g_stop && (options.count == 0 ||
                           static_cast<long>(counters.sent) < options.count)) {
            if (!connected) {
                try {
                    camera.open(options);
                    connected = true;
                    stream_id = options.camera_id + "-" + boot + "-" + std::to_string(++opens);
                    have_camera_frame = false;
                    if (counters.disconnects) {
                        ++counters.reconnects;
                        events.emit("camera", "camera reconnected", counters);
                    } else {
                        events.emit("camera", "camera opened", counters);
                    }
                } catch (const std::exception& e) {
                    camera.close();
                    if (!counters.disconnects && counters.sent == 0 && !options.camera.empty()
                        && options.count) {
                        std::fprintf(stderr, "edge-camera-bridge: %s\n", e.what());
                    }
                    std::this_thread::sleep_for(std::chrono::milliseconds(500));
                    continue;
                }
            }
            {  // buffers ZeroMQ has finished with go back to the stream
                std::lock_guard<std::mutex> guard(returns.lock);
                for (ArvBuffer* b : returns.buffers) arv_stream_push_buffer(camera.stream, b);
                returns.buffers.clear();
            }
            if (g_control_lost) {
                ++counters.disconnects;
                events.emit("camera", "camera disconnected (control lost); reconnecting",
                            counters);
                camera.close();
                connected = false;
                continue;
            }
            ArvBuffer* buffer = arv_stream_timeout_pop_buffer(camera.stream, 200000);
            if (!buffer) {
                ++counters.timeouts;
                continue;
            }
            if (arv_buffer_get_status(buffer) != ARV_BUFFER_STATUS_SUCCESS) {
                ++counters.incomplete;  // never published as a good frame
                events.emit("drop", "incomplete or corrupt buffer from the camera", counters);
                arv_stream_push_buffer(camera.stream, buffer);
                continue;
            }
            const std::uint64_t camera_frame = arv_buffer_get_frame_id(buffer);
            if (have_camera_frame && camera_frame > last_camera_frame + 1) {
                counters.lost += camera_frame - last_camera_frame - 1;
                events.emit("drop", "frames lost between camera and bridge", counters);
            }
            have_camera_frame = true;
            last_camera_frame = camera_frame;

            size_t size = 0;
            const void* data = arv_buffer_get_data(buffer, &size);
            lineside::FrameHeader header;
            header.camera_id = options.camera_id;
            header.frame_id = camera_frame;
            header.stream_id = stream_id;
            header.timestamp_ns = arv_buffer_get_system_timestamp(buffer);
            if (header.timestamp_ns == 0) header.timestamp_ns = now_ns();
            header.encoding = "mono8";
            const int width = arv_buffer_get_image_width(buffer);
            const int height = arv_buffer_get_image_height(buffer);
            header.shape = {height, width};
            if (size < static_cast<size_t>(width) * height) {
                ++counters.incomplete;
                events.emit("drop", "buffer smaller than its image size", counters);
                arv_stream_push_buffer(camera.stream, buffer);
                continue;
            }
            const std::string json = lineside::encode_header(header);
            zmq_msg_t part;
            zmq_msg_init_size(&part, json.size());
            std::memcpy(zmq_msg_data(&part), json.data(), json.size());
            zmq_msg_t pixels;
            auto* sent = new SentBuffer{buffer, &returns};
            // Zero copy: ZeroMQ sends straight from the Aravis buffer and calls
            // release_buffer when done with it.
            zmq_msg_init_data(&pixels, const_cast<void*>(data),
                              static_cast<size_t>(width) * height, release_buffer, sent);
            if (zmq_msg_send(&part, frames, ZMQ_SNDMORE) < 0 ||
                zmq_msg_send(&pixels, frames, 0) < 0) {
                ++counters.send_failures;
                zmq_msg_close(&part);
                zmq_msg_close(&pixels);  // returns the buffer through release_buffer
                if (g_stop) break;
                continue;
            }
            ++counters.sent;
            const auto now = std::chrono::steady_clock::now();
            if (now - last_report > std::chrono::seconds(1)) {
                events.emit("heartbeat", "counters", counters);
                last_report = now;
            }
        }
        events.emit("stopped", "bridge stopping", counters);
        camera.close();
        events.close();
        // Let the last frames leave (linger) before the process ends.
        zmq_close(frames);
        zmq_ctx_term(context);
    }
    std::printf("sent %llu incomplete %llu lost %llu disconnects %llu reconnects %llu\n",
                static_cast<unsigned long long>(counters.sent),
                static_cast<unsigned long long>(counters.incomplete),
                static_cast<unsigned long long>(counters.lost),
                static_cast<unsigned long long>(counters.disconnects),
                static_cast<unsigned long long>(counters.reconnects));
    return 0;
}
