#include <zlib.h>
#include <brotli/encode.h>

// zlib's deflateInit2 is a macro; Swift sees this function instead.
static inline int ccompression_deflate_init_gzip(z_stream *stream, int level) {
    // 15 window bits + 16: a gzip wrapper; memory level 8 is zlib's default.
    return deflateInit2(stream, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
}
