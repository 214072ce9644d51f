import CCompression
import NIOCore

/// Streaming compression of response bodies: each piece of body in, compressed bytes out
/// (flushed, so a slowly streamed page reaches the client as it comes), constant memory.
enum ContentCoding: String, Sendable {
    case gzip
    case br

    /// The coding to use for a request's `Accept-Encoding` (Brotli first when accepted, then
    /// gzip; `q=0` refuses), nil when neither is acceptable.
    static func choose(acceptEncoding values: [String], allowed: [ContentCoding]) -> ContentCoding? {
        var accepted: [String: Double] = [:]
        for value in values {
            for item in value.split(separator: ",") {
                let parts = item.split(separator: ";").map { trimmed($0).lowercased() }
                guard let name = parts.first, !name.isEmpty else { continue }
                var q = 1.0
                for p in parts.dropFirst() where p.hasPrefix("q=") { q = Double(p.dropFirst(2)) ?? 0 }
                accepted[name] = q
            }
        }
        for coding in allowed {
            let q = accepted[coding.rawValue] ?? accepted["*"] ?? 0
            if q > 0 { return coding }
        }
        return nil
    }

    /// Types worth compressing: text, and the structured text formats.
    static func compressible(_ contentType: String?) -> Bool {
        guard let first = contentType?.split(separator: ";").first else { return false }
        let type = trimmed(first).lowercased()
        if type.hasPrefix("text/") { return true }
        if type.hasSuffix("+xml") || type.hasSuffix("+json") { return true }
        return [
            "application/json", "application/javascript", "application/x-javascript", "application/xml", "image/svg+xml",
            "application/manifest+json", "application/wasm", "application/rss+xml", "application/atom+xml",
        ].contains(type)
    }
}

private func trimmed(_ s: Substring) -> Substring {
    var s = s
    while let f = s.first, f == " " || f == "\t" { s.removeFirst() }
    while let l = s.last, l == " " || l == "\t" { s.removeLast() }
    return s
}

/// One response's compressor (gzip through zlib, Brotli through libbrotlienc).
final class BodyCompressor {
    let coding: ContentCoding
    private var zstream = z_stream()
    private var brotli: OpaquePointer?
    private var scratch = [UInt8](repeating: 0, count: 16 * 1024)

    init?(_ coding: ContentCoding, level: Int) {
        self.coding = coding
        switch coding {
        case .gzip:
            guard ccompression_deflate_init_gzip(&zstream, Int32(max(1, min(9, level)))) == Z_OK else { return nil }
        case .br:
            guard let state = BrotliEncoderCreateInstance(nil, nil, nil) else { return nil }
            // Quality 4 to 6 is what servers use on the fly (nginx's brotli module: 6); the
            // window is kept small so each response costs little memory.
            BrotliEncoderSetParameter(state, BROTLI_PARAM_QUALITY, UInt32(max(0, min(11, level))))
            BrotliEncoderSetParameter(state, BROTLI_PARAM_LGWIN, 18)
            brotli = state
        }
    }

    deinit {
        switch coding {
        case .gzip: deflateEnd(&zstream)
        case .br: if let brotli { BrotliEncoderDestroyInstance(brotli) }
        }
    }

    /// Compresses `input` and flushes what it produced.
    func compress(_ input: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer {
        run(input, finish: false, allocator: allocator)
    }

    /// The rest of the compressed stream (the coding's trailer).
    func finish(allocator: ByteBufferAllocator) -> ByteBuffer {
        run(ByteBuffer(), finish: true, allocator: allocator)
    }

    private func run(_ input: ByteBuffer, finish: Bool, allocator: ByteBufferAllocator) -> ByteBuffer {
        var out = allocator.buffer(capacity: max(64, input.readableBytes / 2))
        input.withUnsafeReadableBytes { raw in
            switch coding {
            case .gzip: deflateRun(raw, finish: finish, into: &out)
            case .br: brotliRun(raw, finish: finish, into: &out)
            }
        }
        return out
    }

    private func deflateRun(_ raw: UnsafeRawBufferPointer, finish: Bool, into out: inout ByteBuffer) {
        zstream.next_in = UnsafeMutablePointer(mutating: raw.bindMemory(to: Bytef.self).baseAddress)
        zstream.avail_in = uInt(raw.count)
        let flush = finish ? Z_FINISH : Z_SYNC_FLUSH
        scratch.withUnsafeMutableBufferPointer { buffer in
            repeat {
                zstream.next_out = buffer.baseAddress
                zstream.avail_out = uInt(buffer.count)
                let status = deflate(&zstream, flush)
                let produced = buffer.count - Int(zstream.avail_out)
                if produced > 0 { out.writeBytes(UnsafeBufferPointer(rebasing: buffer[0..<produced])) }
                if status == Z_STREAM_END || status == Z_STREAM_ERROR { break }
                // Done when the output buffer was not filled (all input taken and flushed).
                if zstream.avail_out != 0 { break }
            } while true
        }
        zstream.next_in = nil
    }

    private func brotliRun(_ raw: UnsafeRawBufferPointer, finish: Bool, into out: inout ByteBuffer) {
        guard let brotli else { return }
        var availableIn = raw.count
        var nextIn = raw.bindMemory(to: UInt8.self).baseAddress
        let op = finish ? BROTLI_OPERATION_FINISH : BROTLI_OPERATION_FLUSH
        scratch.withUnsafeMutableBufferPointer { buffer in
            repeat {
                var availableOut = buffer.count
                var nextOut = buffer.baseAddress
                guard BrotliEncoderCompressStream(brotli, op, &availableIn, &nextIn, &availableOut, &nextOut, nil) != 0 else { return }
                let produced = buffer.count - availableOut
                if produced > 0 { out.writeBytes(UnsafeBufferPointer(rebasing: buffer[0..<produced])) }
                if availableIn == 0, BrotliEncoderHasMoreOutput(brotli) == 0 {
                    if !finish || BrotliEncoderIsFinished(brotli) != 0 { break }
                }
            } while true
        }
    }
}
