// The HTTP layer of `hwca serve`: Boost.Beast over Asio, optionally over TLS (and mutual TLS).
// One I/O thread runs an event-driven accept/read/write loop for every connection; requests are
// handed to a pool of worker threads (signing blocks on the token) and their answers written back by
// the I/O thread. Bounds: concurrent connections (over the bound: closed at once), the time a client
// has to send its request headers, the time it has for the body, and the body size.
// This file knows nothing of cfssl; cli/serve_api.h gives it the handlers.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace hwca::cli::serve {

struct HttpRequest {
  std::string method;     // "POST"
  std::string target;     // "/api/v1/cfssl/sign" (query string removed)
  std::string body;
  std::string remote;     // "127.0.0.1:53122"
  std::string client_cn;  // mutual TLS: the CN of the client's certificate
  // Set when the HTTP layer refuses the request itself (body over the cap, unparsable HTTP, a client
  // CN outside the allow-list): the worker handler answers it with cfssl's envelope and records it.
  unsigned refused_status = 0;
  std::string refused_message;
};

struct HttpResponse {
  unsigned status = 200;
  std::string content_type = "application/json";
  std::string body;
};

struct HttpOptions {
  std::string address = "127.0.0.1";
  unsigned short port = 8888;  // 0: any free port (see HttpServer::port())
  std::string tls_cert, tls_key;
  std::string mutual_tls_ca;   // client certificates must chain to this CA
  std::string mutual_tls_cn;   // regex (Go syntax as cfssl's -mutual-tls-cn) the client CN must match
  std::size_t max_connections = 4096;
  std::chrono::milliseconds header_timeout{5000};  // also the keep-alive idle time
  std::chrono::milliseconds body_timeout{30000};   // reading the body, writing the answer
  std::size_t body_limit = 1024 * 1024;
  unsigned workers = 1;
};

// Connection counters, read by /metrics from any thread.
struct ConnectionStats {
  std::atomic<long long> open{0};
  std::atomic<long long> accepted{0};
  std::atomic<long long> refused_over_bound{0};
  std::atomic<long long> timed_out{0};
  std::atomic<long long> tls_handshake_failures{0};
};

struct HttpHandlers {
  // Runs on the I/O thread and must not block (health and metrics). nullopt: the request goes to the
  // worker pool.
  std::function<std::optional<HttpResponse>(const HttpRequest&)> on_io_thread;
  // Runs on a worker thread; must not throw.
  std::function<HttpResponse(const HttpRequest&)> on_worker;
  // SIGHUP; runs on a worker thread; must not throw.
  std::function<void()> on_reload;
  // One line for the log when draining starts and ends.
  std::function<void(const std::string&)> log;
};

class HttpServer {
 public:
  // Binds and listens (Error(Io) when the address cannot be bound, Error(BadInput) for unusable TLS
  // files); nothing is served before run().
  HttpServer(HttpOptions options, HttpHandlers handlers);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  unsigned short port() const;
  const ConnectionStats& stats() const;

  // Serves until SIGTERM or SIGINT, then drains: the listening socket is closed (new connections are
  // refused), idle and half-read connections are closed, requests already handed to a worker finish
  // and their answers are written. Returns when nothing is left. SIGHUP calls on_reload.
  void run();

  struct Impl;  // serve_http.cpp only

 private:
  std::shared_ptr<Impl> m;
};

}  // namespace hwca::cli::serve
