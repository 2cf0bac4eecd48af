"""Board tops: the accelerator behind a UART host link (`top.BoardTop`), its protocol
(`link`) and the UART (`uart`)."""
