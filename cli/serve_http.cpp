#include "cli/serve_http.h"

#include "core/base/error.h"
#include "core/profile.h"
#include "core/x509.h"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include <openssl/ssl.h>

#include <array>
#include <csignal>
#include <list>
#include <regex>

namespace hwca::cli::serve {

namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;

constexpr std::size_t kHeaderLimit = 16 * 1024;
constexpr std::size_t kLingerLimit = 4 * 1024 * 1024;
constexpr auto kLingerTime = std::chrono::seconds(2);

class SessionBase {
 public:
  virtual ~SessionBase() = default;
  // Closes the connection unless a request on it is with a worker or its answer is being written.
  virtual void stop_if_idle() = 0;
};

bool is_http_error(const beast::error_code& ec) {
  return ec.category() == http::make_error_code(http::error::bad_method).category();
}

}  // namespace

struct HttpServer::Impl {
  ConnectionStats stats;  // first: outlives the sessions the io_context may still hold
  HttpOptions opts;
  HttpHandlers handlers;
  net::io_context ioc{1};
  std::unique_ptr<net::thread_pool> pool;
  std::unique_ptr<ssl::context> tls;
  std::optional<std::regex> cn_allow;
  tcp::acceptor acceptor{ioc};
  net::signal_set signals{ioc};
  net::steady_timer backoff{ioc};
  bool draining = false;                             // I/O thread only
  std::list<std::weak_ptr<SessionBase>> sessions;    // I/O thread only
  std::size_t added_since_prune = 0;
  unsigned short bound_port = 0;

  void log(const std::string& line) const {
    if (handlers.log) handlers.log(line);
  }
  void do_accept();
  void on_accept(const beast::error_code& ec, tcp::socket socket);
  void wait_signal();
  void begin_drain();
};

namespace {

template <class Stream>
class Session final : public SessionBase, public std::enable_shared_from_this<Session<Stream>> {
  static constexpr bool kTls = !std::is_same_v<Stream, beast::tcp_stream>;
  enum class State { Handshake, Idle, Reading, Busy, Writing, Closing };

 public:
  template <class... Args>
  Session(HttpServer::Impl& server, std::string remote, Args&&... args)
      : m_s(server), m_stream(std::forward<Args>(args)...), m_remote(std::move(remote)) {
    ++m_s.stats.open;
  }
  ~Session() override { --m_s.stats.open; }

  void start() {
    if constexpr (kTls) {
      m_state = State::Handshake;
      lowest().expires_after(m_s.opts.header_timeout);
      m_stream.async_handshake(ssl::stream_base::server,
                               [self = this->shared_from_this()](const beast::error_code& ec) { self->on_handshake(ec); });
    } else {
      read_request();
    }
  }

  void stop_if_idle() override {
    if (m_state == State::Handshake || m_state == State::Idle || m_state == State::Reading) close();
  }

 private:
  beast::tcp_stream& lowest() { return beast::get_lowest_layer(m_stream); }

  void on_handshake(const beast::error_code& ec) {
    if (ec) {
      if (ec == beast::error::timeout) ++m_s.stats.timed_out;
      ++m_s.stats.tls_handshake_failures;
      return close();
    }
    if constexpr (kTls) {
      if (X509* peer = SSL_get1_peer_certificate(m_stream.native_handle())) {
        try {
          m_client_cn = core::common_name(X509_get_subject_name(peer));
        } catch (const std::exception&) {
          m_client_cn.clear();
        }
        X509_free(peer);
      }
    }
    read_request();
  }

  void read_request() {
    if (m_s.draining) return close();
    m_state = State::Idle;
    m_parser.emplace();
    m_parser->header_limit(static_cast<std::uint32_t>(kHeaderLimit));
    m_parser->body_limit(m_s.opts.body_limit);
    lowest().expires_after(m_s.opts.header_timeout);
    http::async_read_header(m_stream, m_buffer, *m_parser,
                            [self = this->shared_from_this()](const beast::error_code& ec, std::size_t) { self->on_header(ec); });
  }

  // Common handling of a failed read; true when the session is done with.
  bool read_failed(const beast::error_code& ec) {
    if (!ec) return false;
    if (ec == beast::error::timeout) {
      ++m_s.stats.timed_out;
      close();
    } else if (ec == http::error::body_limit) {
      refuse(413, "the request body is over the limit of " + std::to_string(m_s.opts.body_limit) + " bytes");
    } else if (ec == http::error::header_limit) {
      refuse(431, "the request headers are over the limit of " + std::to_string(kHeaderLimit) + " bytes");
    } else if (is_http_error(ec) && ec != http::error::end_of_stream && ec != http::error::partial_message) {
      refuse(400, "malformed HTTP request: " + ec.message());
    } else {
      close();  // end of stream, reset, aborted by a drain
    }
    return true;
  }

  void on_header(const beast::error_code& ec) {
    if (read_failed(ec)) return;
    m_state = State::Reading;
    lowest().expires_after(m_s.opts.body_timeout);
    const auto& h = m_parser->get();
    auto expect = h.find(http::field::expect);
    if (expect != h.end() && beast::iequals(expect->value(), "100-continue") && !m_parser->is_done()) {
      auto cont = std::make_shared<http::response<http::empty_body>>(http::status::continue_, 11);
      http::async_write(m_stream, *cont, [self = this->shared_from_this(), cont](const beast::error_code& wec, std::size_t) {
        if (wec) return self->close();
        self->read_body();
      });
      return;
    }
    read_body();
  }

  void read_body() {
    http::async_read(m_stream, m_buffer, *m_parser,
                     [self = this->shared_from_this()](const beast::error_code& ec, std::size_t) { self->on_body(ec); });
  }

  void on_body(const beast::error_code& ec) {
    if (read_failed(ec)) return;
    auto& msg = m_parser->get();
    HttpRequest req = base_request();
    req.body = std::move(msg.body());
    m_keep_alive = msg.keep_alive();
    if (m_s.cn_allow && !std::regex_search(m_client_cn, *m_s.cn_allow)) {
      req.refused_status = 403;
      req.refused_message = "the client certificate's CN '" + m_client_cn + "' is not allowed by -mutual-tls-cn";
    }
    handle(std::move(req));
  }

  HttpRequest base_request() {
    HttpRequest req;
    if (m_parser) {
      const auto& h = m_parser->get();
      req.method = std::string(h.method_string());
      std::string target(h.target());
      req.target = target.substr(0, target.find('?'));
    }
    req.remote = m_remote;
    req.client_cn = m_client_cn;
    return req;
  }

  // The HTTP layer refuses the request: the worker handler words and records the answer, then the
  // connection is closed (the unread rest of the request is drained first, so the client sees it).
  void refuse(unsigned status, std::string message) {
    HttpRequest req = base_request();
    req.refused_status = status;
    req.refused_message = std::move(message);
    m_keep_alive = false;
    m_linger = true;
    handle(std::move(req));
  }

  void handle(HttpRequest req) {
    m_state = State::Busy;
    if (req.refused_status == 0 && m_s.handlers.on_io_thread) {
      std::optional<HttpResponse> r;
      try {
        r = m_s.handlers.on_io_thread(req);
      } catch (const std::exception& e) {
        r = HttpResponse{500, "text/plain", std::string("internal error: ") + e.what() + "\n"};
      }
      if (r) return write(std::move(*r));
    }
    net::post(*m_s.pool, [self = this->shared_from_this(), req = std::move(req), work = net::make_work_guard(m_s.ioc)]() {
      HttpResponse r = self->m_s.handlers.on_worker(req);
      net::post(self->m_s.ioc, [self, r = std::move(r)]() mutable { self->write(std::move(r)); });
    });
  }

  void write(HttpResponse r) {
    m_state = State::Writing;
    auto res = std::make_shared<http::response<http::string_body>>(static_cast<http::status>(r.status), 11);
    res->set(http::field::server, "hwca");
    res->set(http::field::content_type, r.content_type);
    res->body() = std::move(r.body);
    bool keep = m_keep_alive && !m_s.draining;
    res->keep_alive(keep);
    res->prepare_payload();
    lowest().expires_after(m_s.opts.body_timeout);
    http::async_write(m_stream, *res, [self = this->shared_from_this(), res, keep](const beast::error_code& ec, std::size_t) {
      if (ec) return self->close();
      if (self->m_linger) return self->linger();
      if (!keep) return self->close();
      self->read_request();
    });
  }

  // Half-close, then read and drop what the client still sends (bounded in bytes and time), so that
  // closing with unread data does not reset the connection before the client has read the answer.
  void linger() {
    m_state = State::Closing;
    beast::error_code ec;
    lowest().socket().shutdown(tcp::socket::shutdown_send, ec);
    lowest().expires_after(kLingerTime);
    linger_read();
  }
  void linger_read() {
    lowest().async_read_some(net::buffer(m_discard), [self = this->shared_from_this()](const beast::error_code& ec, std::size_t n) {
      self->m_discarded += n;
      if (ec || self->m_discarded > kLingerLimit) return self->close();
      self->linger_read();
    });
  }

  void close() {
    m_state = State::Closing;
    beast::error_code ec;
    lowest().socket().shutdown(tcp::socket::shutdown_both, ec);
    lowest().socket().close(ec);
  }

  HttpServer::Impl& m_s;
  Stream m_stream;
  std::string m_remote;
  std::string m_client_cn;
  beast::flat_buffer m_buffer;
  std::optional<http::request_parser<http::string_body>> m_parser;
  State m_state = State::Idle;
  bool m_keep_alive = false;
  bool m_linger = false;
  std::array<char, 8192> m_discard{};
  std::size_t m_discarded = 0;
};

}  // namespace

void HttpServer::Impl::do_accept() {
  acceptor.async_accept([this](const beast::error_code& ec, tcp::socket socket) { on_accept(ec, std::move(socket)); });
}

void HttpServer::Impl::on_accept(const beast::error_code& ec, tcp::socket socket) {
  if (draining) return;
  if (ec) {
    if (ec == net::error::operation_aborted) return;
    // Out of descriptors or memory: back off a little instead of spinning.
    backoff.expires_after(std::chrono::milliseconds(100));
    backoff.async_wait([this](const beast::error_code& wec) {
      if (!wec && !draining) do_accept();
    });
    return;
  }
  ++stats.accepted;
  beast::error_code e;
  if (static_cast<std::size_t>(stats.open.load()) >= opts.max_connections) {
    ++stats.refused_over_bound;
    socket.close(e);
    return do_accept();
  }
  socket.set_option(tcp::no_delay(true), e);
  std::string remote = "unknown";
  auto ep = socket.remote_endpoint(e);
  if (!e) remote = (ep.address().is_v6() ? "[" + ep.address().to_string() + "]" : ep.address().to_string()) + ":" +
                   std::to_string(ep.port());
  std::shared_ptr<SessionBase> session;
  if (tls) {
    auto s = std::make_shared<Session<beast::ssl_stream<beast::tcp_stream>>>(*this, remote, std::move(socket), *tls);
    s->start();
    session = s;
  } else {
    auto s = std::make_shared<Session<beast::tcp_stream>>(*this, remote, std::move(socket));
    s->start();
    session = s;
  }
  sessions.push_back(session);
  if (++added_since_prune >= 1024) {
    sessions.remove_if([](const std::weak_ptr<SessionBase>& w) { return w.expired(); });
    added_since_prune = 0;
  }
  do_accept();
}

void HttpServer::Impl::wait_signal() {
  signals.async_wait([this](const beast::error_code& ec, int sig) {
    if (ec) return;
    if (sig == SIGHUP) {
      if (handlers.on_reload) net::post(*pool, [this] { handlers.on_reload(); });
      wait_signal();
      return;
    }
    begin_drain();
  });
}

void HttpServer::Impl::begin_drain() {
  if (draining) return;
  draining = true;
  log("draining: no new connections; finishing the requests in flight");
  beast::error_code ec;
  acceptor.close(ec);
  backoff.cancel();
  signals.cancel();
  for (auto& w : sessions)
    if (auto s = w.lock()) s->stop_if_idle();
  sessions.clear();
}

HttpServer::HttpServer(HttpOptions options, HttpHandlers handlers) : m(std::make_shared<Impl>()) {
  m->opts = std::move(options);
  m->handlers = std::move(handlers);
  if (m->opts.workers < 1) throw Error(ErrorKind::Usage, "--workers must be at least 1");
  if (m->opts.max_connections < 1) throw Error(ErrorKind::Usage, "--max-connections must be at least 1");

  if (!m->opts.tls_cert.empty() || !m->opts.tls_key.empty()) {
    if (m->opts.tls_cert.empty() || m->opts.tls_key.empty())
      throw Error(ErrorKind::Usage, "-tls-cert and -tls-key go together");
    try {
      m->tls = std::make_unique<ssl::context>(ssl::context::tls_server);
      m->tls->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                          ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
      m->tls->use_certificate_chain_file(m->opts.tls_cert);
      m->tls->use_private_key_file(m->opts.tls_key, ssl::context::pem);
      if (!m->opts.mutual_tls_ca.empty()) {
        m->tls->load_verify_file(m->opts.mutual_tls_ca);
        m->tls->set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
      }
    } catch (const boost::system::system_error& e) {
      throw Error(ErrorKind::BadInput, "TLS setup (" + m->opts.tls_cert + ", " + m->opts.tls_key +
                                           (m->opts.mutual_tls_ca.empty() ? "" : ", " + m->opts.mutual_tls_ca) + "): " + e.what());
    }
  } else if (!m->opts.mutual_tls_ca.empty()) {
    throw Error(ErrorKind::Usage, "-mutual-tls-ca needs -tls-cert and -tls-key");
  }
  if (!m->opts.mutual_tls_cn.empty()) {
    if (m->opts.mutual_tls_ca.empty()) throw Error(ErrorKind::Usage, "-mutual-tls-cn needs -mutual-tls-ca");
    try {
      m->cn_allow = core::compile_name_whitelist(m->opts.mutual_tls_cn);
    } catch (const Error& e) {
      throw Error(ErrorKind::Usage, std::string("-mutual-tls-cn: ") + e.what());
    }
  }

  boost::system::error_code ec;
  net::ip::address addr = net::ip::make_address(m->opts.address, ec);
  if (ec) throw Error(ErrorKind::Usage, "-address '" + m->opts.address + "' is not an IP address");
  tcp::endpoint ep(addr, m->opts.port);
  const std::string where = m->opts.address + ":" + std::to_string(m->opts.port);
  auto check = [&](const char* step) {
    if (ec) throw Error(ErrorKind::Io, std::string("cannot listen on ") + where + " (" + step + "): " + ec.message());
  };
  m->acceptor.open(ep.protocol(), ec);
  check("socket");
  m->acceptor.set_option(net::socket_base::reuse_address(true), ec);
  check("SO_REUSEADDR");
  m->acceptor.bind(ep, ec);
  check("bind");
  m->acceptor.listen(net::socket_base::max_listen_connections, ec);
  check("listen");
  m->bound_port = m->acceptor.local_endpoint(ec).port();
  check("getsockname");

  // Registered now, so that a signal arriving before run() is not lost.
  m->signals.add(SIGINT);
  m->signals.add(SIGTERM);
  m->signals.add(SIGHUP);
  m->pool = std::make_unique<net::thread_pool>(m->opts.workers);
}

HttpServer::~HttpServer() {
  if (m && m->pool) {
    m->pool->stop();
    m->pool->join();
  }
}

unsigned short HttpServer::port() const { return m->bound_port; }
const ConnectionStats& HttpServer::stats() const { return m->stats; }

void HttpServer::run() {
  m->wait_signal();
  m->do_accept();
  for (;;) {
    try {
      m->ioc.run();
      break;
    } catch (const std::exception& e) {
      m->log(std::string("internal error on the I/O thread (continuing): ") + e.what());
    }
  }
  m->pool->join();
  m->log("drained; exiting");
}

}  // namespace hwca::cli::serve
