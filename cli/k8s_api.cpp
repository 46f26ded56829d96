#include "cli/k8s_api.h"

#include "core/base/error.h"
#include "core/base/ossl.h"
#include "core/k8s_cluster.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include <array>
#include <mutex>
#include <optional>

namespace hwca::cli::k8s {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using Stream = beast::ssl_stream<beast::tcp_stream>;

namespace {

constexpr std::uint64_t kBodyLimit = 256ull * 1024 * 1024;  // a list of many thousand CSRs

// One connection and the io_context its operations run on. Operations are started, then the context is
// run until they complete: a synchronous interface with the deadlines of beast::tcp_stream.
struct Channel {
  asio::io_context ioc;
  std::unique_ptr<Stream> stream;
  beast::flat_buffer buffer;

  void close() {
    if (stream) {
      beast::error_code ignored;
      beast::get_lowest_layer(*stream).socket().close(ignored);
    }
    stream.reset();
    buffer.clear();
  }
};

}  // namespace

struct ApiClient::Impl {
  asio::ssl::context tls{asio::ssl::context::tls_client};
  Channel requests;
  Channel watch;
};

namespace {

std::string describe(const beast::error_code& ec) {
  std::string msg = ec.message();
  if (ec.category() == asio::error::get_ssl_category()) {
    const long reason = ERR_GET_REASON(static_cast<unsigned long>(ec.value()));
    if (reason == SSL_R_CERTIFICATE_VERIFY_FAILED)
      msg += " (the API server's certificate does not verify against the kubeconfig's certificate-authority, or does "
             "not name the server's host)";
  }
  return msg;
}

// Runs the operation `start` begins until it completes. Error(Io) naming `what` when it fails, times out
// or is interrupted.
template <typename Start>
void run(Channel& ch, const std::atomic<bool>& interrupted, const std::string& what, Start&& start) {
  if (interrupted.load()) throw Error(ErrorKind::Io, what + ": interrupted");
  std::optional<beast::error_code> result;
  start([&result](beast::error_code ec, auto&&...) { result = ec; });
  ch.ioc.restart();
  ch.ioc.run();
  if (!result) throw Error(ErrorKind::Internal, what + ": the operation did not complete");
  if (*result) {
    if (interrupted.load()) throw Error(ErrorKind::Io, what + ": interrupted");
    if (*result == beast::error::timeout) throw Error(ErrorKind::Io, what + ": timed out");
    throw Error(ErrorKind::Io, what + ": " + describe(*result));
  }
}

void load_tls(asio::ssl::context& tls, const core::k8s::ClientConfig& c) {
  SSL_CTX* ctx = tls.native_handle();
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  X509_STORE* store = SSL_CTX_get_cert_store(ctx);
  const std::string ca_what = c.file + ": the cluster's certificate-authority";
  BIO_ptr bio(BIO_new_mem_buf(c.ca_pem.data(), static_cast<int>(c.ca_pem.size())));
  if (!bio) throw_openssl(ErrorKind::Internal, "BIO_new_mem_buf");
  int added = 0;
  while (X509* raw = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
    X509_ptr cert(raw);
    if (X509_STORE_add_cert(store, cert.get()) != 1) throw_openssl(ErrorKind::BadInput, ca_what + ": cannot be used");
    ++added;
  }
  drain_openssl_errors();
  if (added == 0) throw Error(ErrorKind::BadInput, ca_what + " holds no PEM certificate");
  if (!c.client_cert_pem.empty()) {
    X509_ptr cert = x509_from_pem(c.client_cert_pem, c.file + ": the client certificate");
    if (SSL_CTX_use_certificate(ctx, cert.get()) != 1)
      throw_openssl(ErrorKind::BadInput, c.file + ": the client certificate cannot be used");
    BIO_ptr kb(BIO_new_mem_buf(c.client_key_pem.data(), static_cast<int>(c.client_key_pem.size())));
    if (!kb) throw_openssl(ErrorKind::Internal, "BIO_new_mem_buf");
    EVP_PKEY_ptr key(PEM_read_bio_PrivateKey(kb.get(), nullptr, nullptr, nullptr));
    if (!key) throw_openssl(ErrorKind::BadInput, c.file + ": the client key is not a PEM private key");
    if (SSL_CTX_use_PrivateKey(ctx, key.get()) != 1 || SSL_CTX_check_private_key(ctx) != 1)
      throw_openssl(ErrorKind::BadInput, c.file + ": the client key does not match the client certificate");
  }
}

}  // namespace

ApiClient::ApiClient(core::k8s::ClientConfig config, std::chrono::seconds request_timeout)
    : m_config(std::move(config)), m_request_timeout(request_timeout), m(std::make_unique<Impl>()) {
  load_tls(m->tls, m_config);
}

ApiClient::~ApiClient() {
  m->requests.close();
  m->watch.close();
}

void ApiClient::interrupt() {
  m_interrupted.store(true);
  for (Channel* ch : {&m->requests, &m->watch})
    asio::post(ch->ioc, [ch] {
      if (ch->stream) beast::get_lowest_layer(*ch->stream).cancel();
    });
}

namespace {

void connect(Channel& ch, asio::ssl::context& tls, const core::k8s::ClientConfig& c, std::chrono::seconds timeout,
             const std::atomic<bool>& interrupted) {
  ch.close();
  const std::string where = "API server " + c.server;
  tcp::resolver resolver(ch.ioc);
  tcp::resolver::results_type endpoints;
  run(ch, interrupted, where + ": resolving " + c.host, [&](auto handler) {
    resolver.async_resolve(c.host, c.port, [&endpoints, handler](beast::error_code ec, tcp::resolver::results_type r) mutable {
      endpoints = std::move(r);
      handler(ec);
    });
  });
  ch.stream = std::make_unique<Stream>(ch.ioc, tls);
  SSL* ssl = ch.stream->native_handle();
  const std::string& name = c.tls_server_name.empty() ? c.host : c.tls_server_name;
  if (core::k8s::is_ip_literal(name)) {
    if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name.c_str()) != 1)
      throw_openssl(ErrorKind::BadInput, where + ": cannot verify against IP " + name);
  } else {
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wold-style-cast"  // OpenSSL's SSL_set_tlsext_host_name macro
    const long sni = SSL_set_tlsext_host_name(ssl, name.c_str());
#pragma GCC diagnostic pop
    if (sni != 1 || SSL_set1_host(ssl, name.c_str()) != 1)
      throw_openssl(ErrorKind::BadInput, where + ": cannot verify against host " + name);
  }
  beast::get_lowest_layer(*ch.stream).expires_after(timeout);
  run(ch, interrupted, where + ": connecting", [&](auto handler) {
    beast::get_lowest_layer(*ch.stream).async_connect(endpoints, std::move(handler));
  });
  run(ch, interrupted, where + ": TLS handshake", [&](auto handler) {
    ch.stream->async_handshake(asio::ssl::stream_base::client, std::move(handler));
  });
}

http::request<http::string_body> make_request(const core::k8s::ClientConfig& c, http::verb verb, const std::string& path,
                                              const std::string& body) {
  http::request<http::string_body> req{verb, c.path_prefix + path, 11};
  req.set(http::field::host, c.host + ":" + c.port);
  req.set(http::field::user_agent, "hwca-k8s-signer");
  req.set(http::field::accept, "application/json");
  if (!c.token.empty()) req.set(http::field::authorization, "Bearer " + c.token);
  if (!body.empty()) req.set(http::field::content_type, "application/json");
  req.body() = body;
  req.keep_alive(true);
  req.prepare_payload();
  return req;
}

http::verb verb_of(const std::string& method) {
  http::verb v = http::string_to_verb(method);
  if (v == http::verb::unknown) throw Error(ErrorKind::Internal, "unknown HTTP method " + method);
  return v;
}

}  // namespace

ApiResponse ApiClient::request(const std::string& method, const std::string& path, const std::string& body) {
  const std::string what = "API server " + m_config.server + ": " + method + " " + path;
  // A kept-alive connection the server has since closed fails on first use: then once more on a new one.
  for (int attempt = 0;; ++attempt) {
    Channel& ch = m->requests;
    const bool reused = ch.stream != nullptr;
    try {
      if (!ch.stream) connect(ch, m->tls, m_config, m_request_timeout, m_interrupted);
      auto req = make_request(m_config, verb_of(method), path, body);
      beast::get_lowest_layer(*ch.stream).expires_after(m_request_timeout);
      run(ch, m_interrupted, what, [&](auto handler) { http::async_write(*ch.stream, req, std::move(handler)); });
      http::response_parser<http::string_body> parser;
      parser.body_limit(kBodyLimit);
      run(ch, m_interrupted, what, [&](auto handler) { http::async_read(*ch.stream, ch.buffer, parser, std::move(handler)); });
      ApiResponse out;
      out.status = parser.get().result_int();
      out.body = std::move(parser.get().body());
      if (!parser.get().keep_alive()) ch.close();
      return out;
    } catch (const Error&) {
      ch.close();
      if (!reused || attempt > 0 || m_interrupted.load()) throw;
    }
  }
}

ApiResponse ApiClient::watch(const std::string& path, std::chrono::seconds idle_timeout,
                             const std::function<void(const std::string&)>& on_line) {
  const std::string what = "API server " + m_config.server + ": watch " + path;
  Channel& ch = m->watch;
  try {
    connect(ch, m->tls, m_config, m_request_timeout, m_interrupted);
    auto req = make_request(m_config, http::verb::get, path, "");
    beast::get_lowest_layer(*ch.stream).expires_after(m_request_timeout);
    run(ch, m_interrupted, what, [&](auto handler) { http::async_write(*ch.stream, req, std::move(handler)); });
    http::response_parser<http::buffer_body> parser;
    parser.body_limit(boost::none);  // a watch may run for hours
    run(ch, m_interrupted, what, [&](auto handler) { http::async_read_header(*ch.stream, ch.buffer, parser, std::move(handler)); });
    ApiResponse out;
    out.status = parser.get().result_int();
    std::string pending;  // bytes after the last '\n'
    std::array<char, 16384> chunk{};
    while (!parser.is_done()) {
      parser.get().body().data = chunk.data();
      parser.get().body().size = chunk.size();
      std::optional<beast::error_code> result;
      beast::get_lowest_layer(*ch.stream).expires_after(idle_timeout);
      if (m_interrupted.load()) throw Error(ErrorKind::Io, what + ": interrupted");
      http::async_read_some(*ch.stream, ch.buffer, parser, [&result](beast::error_code ec, std::size_t) { result = ec; });
      ch.ioc.restart();
      ch.ioc.run();
      if (!result) throw Error(ErrorKind::Internal, what + ": the read did not complete");
      if (*result && *result != http::error::need_buffer) {
        if (m_interrupted.load()) throw Error(ErrorKind::Io, what + ": interrupted");
        if (*result == beast::error::timeout)
          throw Error(ErrorKind::Io, what + ": nothing arrived for " + std::to_string(idle_timeout.count()) + "s");
        throw Error(ErrorKind::Io, what + ": " + describe(*result));
      }
      const std::size_t got = chunk.size() - parser.get().body().size;
      if (out.status != 200) {
        if (out.body.size() < 1024 * 1024) out.body.append(chunk.data(), got);
        continue;
      }
      pending.append(chunk.data(), got);
      std::size_t start = 0;
      for (std::size_t nl; (nl = pending.find('\n', start)) != std::string::npos; start = nl + 1)
        if (nl > start) on_line(pending.substr(start, nl - start));
      pending.erase(0, start);
      if (pending.size() > kBodyLimit) throw Error(ErrorKind::Io, what + ": a watch event larger than 256 MiB");
    }
    if (out.status == 200 && !pending.empty()) on_line(pending);
    ch.close();
    return out;
  } catch (...) {
    ch.close();
    throw;
  }
}

}  // namespace hwca::cli::k8s
