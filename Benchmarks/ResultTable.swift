import Foundation

/// Rows of named figures printed as an aligned text table or as JSON.
struct ResultTable {
    var title: String
    var columns: [String]
    var rows: [[String]] = []
    var notes: [String] = []

    mutating func add(_ row: String...) { rows.append(row) }

    func render() -> String {
        let widths = columns.indices.map { column in
            ([columns[column]] + rows.map { column < $0.count ? $0[column] : "" }).map(\.count).max() ?? 0
        }
        func line(_ cells: [String]) -> String {
            "| " + columns.indices.map { index in
                let cell = index < cells.count ? cells[index] : ""
                return cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
            }.joined(separator: " | ") + " |"
        }
        var text = "\n\(title)\n\n" + line(columns) + "\n"
        text += "|" + widths.map { String(repeating: "-", count: $0 + 2) }.joined(separator: "|") + "|\n"
        for row in rows { text += line(row) + "\n" }
        for note in notes { text += "\n\(note)" }
        return text + "\n"
    }

    func json() -> String {
        let objects = rows.map { row in
            Dictionary(uniqueKeysWithValues: zip(columns, row))
        }
        let payload: [String: Any] = ["title": title, "rows": objects, "notes": notes]
        let data = (try? JSONSerialization.data(withJSONObject: payload, options: [.prettyPrinted, .sortedKeys])) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }
}

/// Progress on standard error, so a table on standard output stays clean.
func progress(_ text: String) {
    FileHandle.standardError.write(Data("» \(text)\n".utf8))
}

extension Double {
    /// `1234567.8` → `1,234,568`.
    var grouped: String {
        let formatter = NumberFormatter()
        formatter.numberStyle = .decimal
        formatter.maximumFractionDigits = 0
        return formatter.string(from: NSNumber(value: self)) ?? String(Int(self))
    }

    func fixed(_ digits: Int) -> String { String(format: "%.\(digits)f", self) }
}
