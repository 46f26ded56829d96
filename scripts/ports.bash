# Loopback ports for the servers that tests and benchmarks start (swtpm, hwca serve, cfssl serve).
# Source it. Plain bash and /proc: no iproute2 needed.

# port_used PORT: some TCP socket (IPv4 or IPv6, any state, TIME-WAIT included) has PORT as its local
# port. A server cannot bind over a TIME-WAIT, and a restarted swtpm binds the same port again.
port_used() {
  local hex
  hex=$(printf '%04X' "$1")
  awk -v p=":$hex" 'FNR > 1 && substr($2, length($2) - 4) == p { found = 1 } END { exit !found }' \
    /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# random_port: a port in 20000-31999, below the kernel's ephemeral range (32768 and up here), where
# outgoing connections do not land. Callers check it with port_used and retry.
random_port() {
  echo $(( 20000 + (RANDOM * 32768 + RANDOM) % 12000 ))
}
