// A small client of the Kubernetes API server for `hwca k8s signer`: HTTPS with the kubeconfig's
// credentials (client certificate or bearer token), the server verified against the kubeconfig's CA and
// its name or IP, Boost.Beast over Asio. Plain requests share one kept-alive connection; a watch gets a
// connection of its own and hands each line of the stream to a callback as it arrives. Every network
// step has a deadline, and interrupt() (from any thread) ends a request or watch in progress.
#pragma once

#include "core/k8s_kubeconfig.h"

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>

namespace hwca::cli::k8s {

struct ApiResponse {
  unsigned status = 0;
  std::string body;
};

class ApiClient {
 public:
  // Error(BadInput) when the kubeconfig's CA or client certificate and key are unusable.
  explicit ApiClient(core::k8s::ClientConfig config, std::chrono::seconds request_timeout = std::chrono::seconds(30));
  ~ApiClient();
  ApiClient(const ApiClient&) = delete;
  ApiClient& operator=(const ApiClient&) = delete;

  // `path` is absolute ("/apis/certificates.k8s.io/v1/..."), query included; the server's path prefix is
  // added. JSON in and out. Error(Io) for a connection, TLS or timeout failure (any HTTP status is
  // returned, not thrown).
  ApiResponse request(const std::string& method, const std::string& path, const std::string& body = "");

  // GETs `path` and streams the body: on_line is called with each complete line (without its '\n') as
  // it arrives. Returns when the server ends the response (status 200: a normal end of the watch; any
  // other status: the whole body is returned in `body` and on_line is not called). Error(Io) for a broken
  // connection, and when no byte arrives for `idle_timeout`.
  ApiResponse watch(const std::string& path, std::chrono::seconds idle_timeout,
                    const std::function<void(const std::string&)>& on_line);

  // Ends a request or watch in progress (and any later one) with Error(Io) "interrupted". Thread-safe.
  void interrupt();
  bool interrupted() const { return m_interrupted.load(); }

  const core::k8s::ClientConfig& config() const { return m_config; }

  struct Impl;

 private:
  core::k8s::ClientConfig m_config;
  std::chrono::seconds m_request_timeout;
  std::atomic<bool> m_interrupted{false};
  std::unique_ptr<Impl> m;
};

}  // namespace hwca::cli::k8s
