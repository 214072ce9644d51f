/// A strict, incremental scanner for the chunked transfer coding (RFC 9112 section 7.1).
///
/// It never copies: `scan` reports which byte ranges of the input are chunk data, and how many
/// input bytes belong to the message. Passing a body through unchanged forwards the consumed
/// bytes as they are; de-chunking (for HTTP/1.0 clients) forwards only the data ranges.
public struct ChunkedScanner: Sendable {
    public enum Failure: Error, Equatable, Sendable {
        case badChunkSize
        case badChunkExtension
        case missingCRLF
        case trailerTooLarge
        case badTrailer
    }

    enum State: Sendable, Equatable {
        case size(digits: Int)
        case extensions
        case sizeLF
        case data(remaining: Int)
        case dataCR
        case dataLF
        case trailerLineStart
        case trailerName
        case trailerLine
        case trailerLF
        case finalLF
        case done
    }

    var state: State = .size(digits: 0)
    var chunkSize = 0
    var trailerBytes = 0
    public let maxTrailerBytes: Int

    public init(maxTrailerBytes: Int = 16 * 1024) {
        self.maxTrailerBytes = maxTrailerBytes
    }

    public var isDone: Bool { state == .done }

    /// Consumes bytes until the input ends or the body is complete, calling `onData(start,
    /// count)` for each data range within `bytes`. Returns the number of bytes consumed; bytes
    /// after a complete body are left for the next message.
    public mutating func scan(_ bytes: UnsafeRawBufferPointer, onData: (Int, Int) -> Void) throws(Failure) -> Int {
        var i = 0
        let n = bytes.count
        while i < n {
            switch state {
            case .done:
                return i
            case .size(let digits):
                let b = bytes[i]
                if let v = hexValue(b) {
                    if digits >= 15 { throw .badChunkSize }
                    chunkSize = chunkSize << 4 | v
                    state = .size(digits: digits + 1)
                } else if digits == 0 {
                    throw .badChunkSize
                } else if b == 0x0D {
                    state = .sizeLF
                } else if b == UInt8(ascii: ";") || b == 0x20 || b == 0x09 {
                    state = .extensions
                } else {
                    throw .badChunkSize
                }
                i += 1
            case .extensions:
                let b = bytes[i]
                if b == 0x0D {
                    state = .sizeLF
                } else if b == 0x0A || (b < 0x20 && b != 0x09) || b == 0x7F {
                    throw .badChunkExtension
                }
                i += 1
            case .sizeLF:
                guard bytes[i] == 0x0A else { throw .missingCRLF }
                i += 1
                if chunkSize == 0 {
                    state = .trailerLineStart
                } else {
                    state = .data(remaining: chunkSize)
                }
            case .data(let remaining):
                let take = min(remaining, n - i)
                onData(i, take)
                i += take
                state = remaining - take == 0 ? .dataCR : .data(remaining: remaining - take)
            case .dataCR:
                guard bytes[i] == 0x0D else { throw .missingCRLF }
                i += 1
                state = .dataLF
            case .dataLF:
                guard bytes[i] == 0x0A else { throw .missingCRLF }
                i += 1
                chunkSize = 0
                state = .size(digits: 0)
            case .trailerLineStart:
                let b = bytes[i]
                if b == 0x0D {
                    state = .finalLF
                } else if isTchar(b) {
                    state = .trailerName
                } else {
                    throw .badTrailer
                }
                try countTrailer()
                i += 1
            case .trailerName:
                let b = bytes[i]
                if b == UInt8(ascii: ":") {
                    state = .trailerLine
                } else if !isTchar(b) {
                    throw .badTrailer
                }
                try countTrailer()
                i += 1
            case .trailerLine:
                let b = bytes[i]
                if b == 0x0D {
                    state = .trailerLF
                } else if !isFieldValueByte(b) {
                    throw .badTrailer
                }
                try countTrailer()
                i += 1
            case .trailerLF:
                guard bytes[i] == 0x0A else { throw .missingCRLF }
                try countTrailer()
                i += 1
                state = .trailerLineStart
            case .finalLF:
                guard bytes[i] == 0x0A else { throw .missingCRLF }
                i += 1
                state = .done
                return i
            }
        }
        return i
    }

    mutating func countTrailer() throws(Failure) {
        trailerBytes += 1
        if trailerBytes > maxTrailerBytes { throw .trailerTooLarge }
    }

    @inline(__always) func hexValue(_ b: UInt8) -> Int? {
        switch b {
        case 0x30...0x39: return Int(b - 0x30)
        case 0x61...0x66: return Int(b - 0x61 + 10)
        case 0x41...0x46: return Int(b - 0x41 + 10)
        default: return nil
        }
    }
}
