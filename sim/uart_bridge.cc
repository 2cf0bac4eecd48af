// UART bridge for a CXXRTL-compiled board top (see axsa/sim/board_sim.py).
//
// Compiled with the design into one shared library. The simulated host side of the
// serial line lives here, so Python hands over bytes and gets bytes back, once per call:
// `axsa_uart_run` clocks the design, serializing the given bytes onto its `rx` pin (8N1,
// `divisor` cycles per bit, frames back to back) and deserializing its `tx` pin (a start
// bit's falling edge, then every bit sampled in its middle).
//
// Objects are reached through the CXXRTL C API, as in cxxrtl_harness.cc.

#include <cxxrtl/capi/cxxrtl_capi.h>

#include <cstdint>

extern "C" cxxrtl_toplevel cxxrtl_design_create();

namespace {

struct Board {
	cxxrtl_handle handle = nullptr;
	cxxrtl_object *clk = nullptr, *rx = nullptr, *tx = nullptr;
	int64_t divisor = 16;
	// rx side: the frame being sent (10 bits, bit 0 first) and the cycles it has been on
	uint32_t rx_frame = 0;
	int64_t rx_elapsed = -1;  // -1: no frame on the line
	// tx side: cycles since the start bit's falling edge, the bits gathered so far
	int64_t tx_elapsed = -1;  // -1: waiting for a start bit
	uint32_t tx_bits = 0;
	bool tx_prev = true;
};

void set_bit(cxxrtl_object *obj, bool value) {
	obj->next[0] = value ? 1u : 0u;
}

void idle_lines(Board *b) {
	set_bit(b->clk, false);
	set_bit(b->rx, true);
	cxxrtl_step(b->handle);
	b->rx_elapsed = -1;
	b->tx_elapsed = -1;
	b->tx_prev = true;
}

}  // namespace

extern "C" {

// A fresh board with `divisor` cycles per bit; nullptr if a pin is missing.
void *axsa_uart_create(int64_t divisor) {
	Board *b = new Board;
	b->handle = cxxrtl_create(cxxrtl_design_create());
	b->clk = cxxrtl_get(b->handle, "clk");
	b->rx = cxxrtl_get(b->handle, "rx");
	b->tx = cxxrtl_get(b->handle, "tx");
	if (b->clk == nullptr || b->rx == nullptr || b->tx == nullptr) {
		cxxrtl_destroy(b->handle);
		delete b;
		return nullptr;
	}
	b->divisor = divisor;
	idle_lines(b);
	return b;
}

void axsa_uart_destroy(void *p) {
	Board *b = static_cast<Board *>(p);
	cxxrtl_destroy(b->handle);
	delete b;
}

// Power-on state again (every register to its init value), lines idle.
void axsa_uart_reset(void *p) {
	Board *b = static_cast<Board *>(p);
	cxxrtl_reset(b->handle);
	idle_lines(b);
}

// Clock the board: send the `n_in` bytes of `in` on rx, store the bytes read off tx in
// `out` (at most `out_cap`; their count in `*n_out`). Returns after `max_cycles` cycles,
// when `out` is full, or once every byte is sent and tx has stayed idle (high, no frame
// begun) for `idle_cycles` cycles. Returns the cycles run.
int64_t axsa_uart_run(void *p, const uint8_t *in, int64_t n_in, uint8_t *out,
                      int64_t out_cap, int64_t *n_out, int64_t max_cycles,
                      int64_t idle_cycles) {
	Board *b = static_cast<Board *>(p);
	const int64_t d = b->divisor;
	int64_t next_in = 0, cycles = 0, quiet = 0;
	*n_out = 0;
	while (cycles < max_cycles && *n_out < out_cap) {
		// the host's line: the next bit of the current frame, or the next frame
		if (b->rx_elapsed < 0 && next_in < n_in) {
			b->rx_frame = (uint32_t(in[next_in++]) << 1) | (1u << 9);
			b->rx_elapsed = 0;
		}
		bool rx = b->rx_elapsed < 0 ? true : ((b->rx_frame >> (b->rx_elapsed / d)) & 1u);
		set_bit(b->clk, false);
		set_bit(b->rx, rx);
		cxxrtl_step(b->handle);
		set_bit(b->clk, true);
		cxxrtl_step(b->handle);
		cycles++;
		if (b->rx_elapsed >= 0 && ++b->rx_elapsed == 10 * d)
			b->rx_elapsed = -1;

		// the board's line, sampled after the edge
		bool tx = (b->tx->curr[0] & 1u) != 0;
		if (b->tx_elapsed < 0) {
			if (b->tx_prev && !tx)
				b->tx_elapsed = 0, b->tx_bits = 0;
		} else {
			b->tx_elapsed++;
			// bit i's middle: i * d + d / 2 cycles after the falling edge
			if (b->tx_elapsed % d == d / 2) {
				int64_t bit = b->tx_elapsed / d;
				if (bit >= 1 && bit <= 8)
					b->tx_bits |= uint32_t(tx) << (bit - 1);
				if (bit == 9) {
					if (tx)  // a good stop bit; a bad one drops the frame
						out[(*n_out)++] = uint8_t(b->tx_bits);
					b->tx_elapsed = -1;
				}
			}
		}
		b->tx_prev = tx;
		bool busy = next_in < n_in || b->rx_elapsed >= 0 || b->tx_elapsed >= 0 || !tx;
		quiet = busy ? 0 : quiet + 1;
		if (quiet >= idle_cycles)
			break;
	}
	set_bit(b->clk, false);
	return cycles;
}

}  // extern "C"
